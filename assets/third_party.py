"""`patched_vnext` and `deform_attn_ops`: the VideoCutLER toolchain (real path).

Both run the library (`wsovvis_dagster.vnext.toolchain`) with settings from their `Config`;
every step is idempotent, so a second materialisation changes nothing and says so.
"""

from pathlib import Path

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    Config,
    DataVersion,
    MaterializeResult,
    MetadataValue,
    asset,
)
from pydantic import Field

from wsovvis_dagster.vnext.patch import PATCH_VERSION
from wsovvis_dagster.vnext.sources import CUTLER, VNEXT

REPO = Path(__file__).resolve().parents[1]


def _root(path: str) -> Path:
    return Path(path) if Path(path).is_absolute() else REPO / path


class PatchedVNextConfig(Config):
    root: str = Field(default="third_party", description="Folder for the two checkouts")
    vnext_source: str = Field(default=VNEXT.url,
                              description="git URL, local clone or bare mirror of VNext")
    cutler_source: str = Field(default=CUTLER.url,
                               description="git URL, local clone or bare mirror of CutLER")
    vnext_commit: str = Field(default=VNEXT.commit, description="full SHA the patch targets")
    cutler_commit: str = Field(default=CUTLER.commit, description="full SHA the patch targets")
    max_jobs: int = Field(default=0, description="parallel compile jobs (0: all cores)")


@asset(
    group_name="third_party",
    kinds={"python"},
    owners=["team:wsovvis"],
    code_version=PATCH_VERSION,
    check_specs=[AssetCheckSpec("imports_in_fresh_interpreter", asset="patched_vnext",
                                blocking=True)],
)
def patched_vnext(context: AssetExecutionContext, config: PatchedVNextConfig) -> MaterializeResult:
    """VNext + CutLER checkouts at pinned commits, patched so VideoCutLER imports."""
    from wsovvis_dagster.errors import ThirdPartyError
    from wsovvis_dagster.vnext.install import verify_imports
    from wsovvis_dagster.vnext.toolchain import prepare_vnext

    root = _root(config.root)
    result = prepare_vnext(root, vnext_source=config.vnext_source,
                           cutler_source=config.cutler_source, vnext_commit=config.vnext_commit,
                           cutler_commit=config.cutler_commit, max_jobs=config.max_jobs or None)
    context.log.info(result.patch.summary())
    try:
        rep = verify_imports(result.vnext.path, result.cutler.path)
        check = AssetCheckResult(passed=True, metadata={
            "detectron2": rep.detectron2, "mask2former": rep.mask2former,
            "deform_attn_backend": str(rep.msda_backend), "import_seconds": rep.seconds})
    except ThirdPartyError as exc:
        check = AssetCheckResult(passed=False, severity=AssetCheckSeverity.ERROR,
                                 metadata={"error": MetadataValue.md(f"```\n{exc}\n```")})
    meta = result.metadata()
    meta["diff_summary"] = MetadataValue.md(f"```\n{meta['diff_summary']}\n```")
    meta["patched_files"] = MetadataValue.md(f"```\n{meta['patched_files']}\n```")
    # a data version of what the sources compute: a speed-only patch leaves masks fresh
    return MaterializeResult(metadata=meta, check_results=[check],
                             data_version=DataVersion(result.data_version()))


class DeformAttnConfig(Config):
    root: str = Field(default="third_party", description="Where patched_vnext put the checkouts")
    cuda_home: str = Field(default="", description="CUDA toolkit to build with (default: "
                           "CUDA_HOME, then nvcc on PATH, then /usr/local/cuda)")
    arch_list: str = Field(default="", description="TORCH_CUDA_ARCH_LIST (default: the GPUs "
                           "visible, e.g. '9.0' on an H200)")
    force_cuda: bool = Field(default=False, description="build the CUDA op with no GPU visible")
    max_jobs: int = Field(default=0, description="parallel compile jobs (0: all cores)")


@asset(deps=[patched_vnext], group_name="third_party", kinds={"pytorch"},
       owners=["team:wsovvis"], code_version=PATCH_VERSION)
def deform_attn_ops(context: AssetExecutionContext, config: DeformAttnConfig) -> MaterializeResult:
    """The MultiScaleDeformableAttention op (CUDA build, or an explicit PyTorch path on CPU)."""
    from wsovvis_dagster.vnext.deform_attn import OpBuildSettings
    from wsovvis_dagster.vnext.toolchain import prepare_deform_attn

    build = OpBuildSettings(cuda_home=config.cuda_home or None, arch_list=config.arch_list or None,
                            force_cuda=config.force_cuda, max_jobs=config.max_jobs or None)
    result = prepare_deform_attn(_root(config.root), build)
    if result.build.slow_path:
        context.log.warning("deform_attn_ops: no CUDA build; VideoCutLER runs the PyTorch "
                            "implementation of deformable attention (slow path)")
    meta = result.metadata()
    if result.build.library:
        meta["library"] = MetadataValue.path(result.build.library)
    return MaterializeResult(metadata=meta, data_version=DataVersion(result.data_version()))
