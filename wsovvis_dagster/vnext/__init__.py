"""The VideoCutLER toolchain: VNext + CutLER sources, our patch, the install and the CUDA op.

Nothing here imports detectron2 or VNext at module level: every step that needs the patched
sources runs them in a fresh subprocess, so this package stays importable without them.

- `sources`: pinned commits and git checkouts (`checkout_pinned`).
- `patch`: our idempotent patch of the checkouts (`apply_patch`).
- `install`: editable install of VNext and the import check (`install_vnext`, `verify_imports`).
- `cuda`: toolkit vs torch CUDA detection (`detect_cuda`, `check_cuda_match`).
- `deform_attn`: the MultiScaleDeformableAttention op build and its explicit backends.
"""

from wsovvis_dagster.vnext.sources import CUTLER, VNEXT, CheckoutResult, RepoPin, checkout_pinned

__all__ = ["CUTLER", "VNEXT", "CheckoutResult", "RepoPin", "checkout_pinned"]
