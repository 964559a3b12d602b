"""The text side: one embedding per category name, aligned with the dataset's category list.

Two sources:
- `attribute_bank`: for the synthetic set. Each attribute word ("red", "circle") gets a fixed
  pseudo-random unit vector; a category is the normalised sum of its words, so a novel
  (unseen colour-shape pair) category is reachable from attributes seen in base categories.
- `load_bank`: a precomputed `.npy` `(C, D)` such as LV-VIS's CLIP bank
  (`fg_bg_5_10_lvvis_ens.npy`, 1196 x 512), with the category list its rows follow.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wsovvis_dagster.training.errors import TextBankError

ATTRIBUTES_SPEC = "attributes"


def is_novel(category: dict) -> bool:
    """LV-VIS convention: partitions 0/1 are base, 2/3 novel; no partition means base."""
    return int(category.get("partition", 0)) >= 2


@dataclass(frozen=True)
class CategoryBank:
    """Category embeddings: row `i` of `embeddings` `(C, D) float32` (L2-normalised) is
    `category_ids[i]`; `novel` `(C,) bool` marks categories never tagged in training."""

    category_ids: tuple[int, ...]
    names: tuple[str, ...]
    novel: np.ndarray
    embeddings: np.ndarray
    source: str  # what built it, part of the checkpoint fingerprint

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    @property
    def base_ids(self) -> tuple[int, ...]:
        return tuple(c for c, n in zip(self.category_ids, self.novel, strict=True) if not n)

    @property
    def base_embeddings(self) -> np.ndarray:
        """`(B, D) float32`: the rows of base categories, the only ones training sees."""
        return self.embeddings[~self.novel]


def _sorted_categories(categories: list[dict]) -> list[dict]:
    if not categories:
        raise TextBankError("the ground truth lists no categories: check its 'categories' field")
    return sorted(categories, key=lambda c: c["id"])


def word_vector(word: str, dim: int, seed: int = 0) -> np.ndarray:
    """A fixed unit vector `(dim,) float32` for `word` (same word, dim and seed: same vector)."""
    digest = hashlib.sha256(f"{seed}:{word.lower()}".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    v = rng.standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


def category_words(category: dict) -> list[str]:
    """Attribute words of a category: its `colour` and `shape` fields, else its name's words."""
    if category.get("colour") and category.get("shape"):
        return [category["colour"], category["shape"]]
    return category["name"].replace("_", " ").split()


def attribute_bank(categories: list[dict], *, dim: int = 64, seed: int = 0) -> CategoryBank:
    """Bank from attribute words: each category is the normalised sum of its word vectors."""
    cats = _sorted_categories(categories)
    rows = []
    for c in cats:
        v = np.sum([word_vector(w, dim, seed) for w in category_words(c)], axis=0)
        rows.append(v / np.linalg.norm(v))
    return CategoryBank(
        category_ids=tuple(int(c["id"]) for c in cats),
        names=tuple(c["name"] for c in cats),
        novel=np.array([is_novel(c) for c in cats], dtype=bool),
        embeddings=np.stack(rows).astype(np.float32),
        source=f"attributes-d{dim}-s{seed}",
    )


def _read_names(path: Path) -> list[str]:
    """Category names from a JSON list (of names or of {"name": ...}) or a text file, one a line."""
    text = path.read_text()
    if path.suffix == ".json":
        data = json.loads(text)
        data = data.get("categories", data) if isinstance(data, dict) else data
        return [d["name"] if isinstance(d, dict) else str(d) for d in data]
    return [line.strip() for line in text.splitlines() if line.strip()]


def load_bank(
    npy_path: Path, categories: list[dict], *, names_path: Path | None = None
) -> CategoryBank:
    """Bank from a precomputed `.npy` `(C, D)`.

    Without `names_path` the rows must follow the categories sorted by id (LV-VIS's bank does);
    with it (JSON or text list of names, one per row) rows are matched to categories by name.
    """
    npy_path = Path(npy_path)
    if not npy_path.is_file():
        raise TextBankError(
            f"text embedding bank {npy_path} not found: point text_bank at a (C, D) .npy "
            f"(e.g. LV-VIS's fg_bg_5_10_lvvis_ens.npy) or use text_bank: {ATTRIBUTES_SPEC}"
        )
    table = np.load(npy_path).astype(np.float32)
    cats = _sorted_categories(categories)
    if table.ndim != 2:
        raise TextBankError(f"{npy_path}: expected a (C, D) array, got shape {table.shape}")
    if names_path is not None:
        names = _read_names(Path(names_path))
        if len(names) != table.shape[0]:
            raise TextBankError(
                f"{names_path} lists {len(names)} names but {npy_path} has {table.shape[0]} rows"
            )
        row_of = {n: i for i, n in enumerate(names)}
        missing = [c["name"] for c in cats if c["name"] not in row_of]
        if missing:
            raise TextBankError(
                f"{len(missing)} categories have no row in {names_path}: {missing[:10]}; "
                "use a bank built for this vocabulary"
            )
        table = table[[row_of[c["name"]] for c in cats]]
    elif table.shape[0] != len(cats):
        raise TextBankError(
            f"{npy_path} has {table.shape[0]} rows but the ground truth has {len(cats)} "
            "categories: pass text_bank_names (the category list the rows follow)"
        )
    norms = np.linalg.norm(table, axis=1, keepdims=True)
    return CategoryBank(
        category_ids=tuple(int(c["id"]) for c in cats),
        names=tuple(c["name"] for c in cats),
        novel=np.array([is_novel(c) for c in cats], dtype=bool),
        embeddings=(table / np.maximum(norms, 1e-12)).astype(np.float32),
        source=f"npy:{npy_path.name}:{table.shape[0]}x{table.shape[1]}",
    )


def build_bank(
    spec: str, categories: list[dict], *, dim: int = 64, seed: int = 0,
    names_path: str | None = None,
) -> CategoryBank:
    """`spec` is `attributes` (synthetic: attribute word vectors) or a path to a `.npy` bank."""
    if spec == ATTRIBUTES_SPEC:
        return attribute_bank(categories, dim=dim, seed=seed)
    return load_bank(Path(spec), categories, names_path=Path(names_path) if names_path else None)
