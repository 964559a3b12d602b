"""`patched_vnext` and `deform_attn_ops`: the VideoCutLER toolchain (real path)."""

from dagster import asset

from wsovvis_dagster.errors import NotImplementedYetError

@asset(group_name="third_party", kinds={"python"}, owners=["team:wsovvis"])
def patched_vnext() -> None:
    """VNext + CutLER checkouts at pinned commits, patched so VideoCutLER imports."""
    raise NotImplementedYetError("patched_vnext is not implemented yet (real-path issue)")

@asset(deps=[patched_vnext], group_name="third_party", kinds={"pytorch"}, owners=["team:wsovvis"])
def deform_attn_ops() -> None:
    """The MultiScaleDeformableAttention op (CUDA build, or an explicit PyTorch path on CPU)."""
    raise NotImplementedYetError("deform_attn_ops is not implemented yet (real-path issue)")
