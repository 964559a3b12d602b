"""The reference WS-OVVIS model and its multiple-instance loss.

A small MLP projects a tube's feature vector into the text embedding space; logits are the
cosine similarities with the category embeddings and a learned background embedding, times a
learned inverse temperature. Each tube gets a softmax over (categories + background); a
video's probability of containing category c pools its tubes' probabilities of c (max, or a
smooth maximum), and is fitted to the video's tags with binary cross-entropy. Tubes that match
none of the video's tags have nowhere to go but the background, which is how it is learned.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

POOLINGS = ("max", "lse")
MAX_LOGIT_SCALE = 100.0


class TubeTextModel(nn.Module):
    """Tube features `(N, F)` -> logits `(N, C + 1)` against `C` text embeddings + background."""

    def __init__(self, feature_dim: int, text_dim: int, *, hidden_dim: int = 256,
                 dropout: float = 0.1, init_temperature: float = 0.07) -> None:
        super().__init__()
        self.register_buffer("feature_mean", torch.zeros(feature_dim))
        self.register_buffer("feature_std", torch.ones(feature_dim))
        # hidden_dim 0: a linear projection (keeps additive attribute structure intact)
        self.mlp = nn.Sequential(
            nn.Linear(feature_dim, hidden_dim), nn.GELU(), nn.Dropout(dropout),
            nn.Linear(hidden_dim, text_dim),
        ) if hidden_dim else nn.Sequential(nn.Dropout(dropout), nn.Linear(feature_dim, text_dim))
        self.background = nn.Parameter(torch.randn(text_dim) / math.sqrt(text_dim))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)))

    def set_feature_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Standardise inputs with training-set statistics (saved with the weights)."""
        self.feature_mean.copy_(mean)
        self.feature_std.copy_(std.clamp_min(1e-4))

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        """`(N, F)` -> unit vectors `(N, D)` in text space."""
        x = (features - self.feature_mean) / self.feature_std
        return F.normalize(self.mlp(x), dim=-1)

    @property
    def temperature(self) -> float:
        return float(1.0 / self.logit_scale.detach().exp().clamp(max=MAX_LOGIT_SCALE))

    def forward(self, features: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Logits `(N, C + 1)`; the last column is the background."""
        targets = torch.cat([F.normalize(text, dim=-1), F.normalize(self.background, dim=0)[None]])
        scale = self.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)
        return scale * self.embed(features) @ targets.T


def pool_log_probs(log_probs: torch.Tensor, pooling: str, lse_r: float = 5.0) -> torch.Tensor:
    """Video-level log-probabilities `(C,)` from tube-level ones `(N, C)`.

    `max`: the best tube. `lse`: the power mean (mean_n p^r)^(1/r), a smooth maximum in [mean,
    max] computed as a log-sum-exp; every tube gets gradient, the best the most.
    """
    if pooling == "max":
        return log_probs.max(dim=0).values
    if pooling == "lse":
        n = log_probs.shape[0]
        return (torch.logsumexp(lse_r * log_probs, dim=0) - math.log(n)) / lse_r
    raise ValueError(f"unknown pooling {pooling!r}: use one of {POOLINGS}")


def mil_loss(logits: torch.Tensor, tags: torch.Tensor, *, pooling: str = "lse",
             lse_r: float = 5.0) -> torch.Tensor:
    """Multiple-instance BCE of one video.

    `logits` `(N, B + 1)`: its N tubes against the B base categories + background; `tags`
    `(B,)` 0/1. Returns the mean BCE over the B categories.
    """
    log_probs = F.log_softmax(logits, dim=1)[:, :-1]
    video = pool_log_probs(log_probs, pooling, lse_r).clamp(max=-1e-6)
    log_not = torch.log(-torch.expm1(video))  # log(1 - p), stable for p near 0 and 1
    return -(tags * video + (1 - tags) * log_not).mean()
