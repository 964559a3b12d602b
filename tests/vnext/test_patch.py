"""Our VNext/CutLER patch and the pinned checkout, on a fake tree (no third-party sources)."""

from __future__ import annotations

import importlib
import sys
import types
import warnings
from dataclasses import replace
from pathlib import Path

import pytest

from wsovvis_dagster.errors import PatchError, SourceCheckoutError
from wsovvis_dagster.vnext import d2_projects
from wsovvis_dagster.vnext.patch import apply_patch, patched_files
from wsovvis_dagster.vnext.sources import VNEXT, checkout_pinned
from wsovvis_dagster.vnext.testing import (
    OPS,
    PIXEL_DECODER,
    VIDEO_DECODER,
    make_fake_checkouts,
)


def _snapshot(*roots: Path) -> dict[str, bytes | str]:
    out: dict[str, bytes | str] = {}
    for root in roots:
        for p in sorted(root.rglob("*")):
            if ".git" in p.parts:
                continue
            if p.is_symlink():
                out[str(p)] = "-> " + str(p.readlink())
            elif p.is_file():
                out[str(p)] = p.read_bytes()
    return out


@pytest.fixture
def fake(tmp_path):
    vnext, cutler, _, _ = make_fake_checkouts(tmp_path)
    return vnext, cutler


def test_patch_edits_every_known_breakage(fake):
    vnext, cutler = fake
    report = apply_patch(vnext, cutler)
    changed = {c.path for c in report.changes}

    projects = (vnext / "detectron2/projects/__init__.py").read_text()
    ns: dict = {}
    exec(projects, ns)  # the mapping still parses, old entries kept
    assert ns["_PROJECTS"] == {"idol": "IDOL", "seqformer": "SeqFormer", "deeplab": "DeepLab",
                               "point_rend": "PointRend"}
    transform = (vnext / "detectron2/data/transforms/transform.py").read_text()
    assert "Image.BILINEAR" in transform and "Image.LINEAR" not in transform
    masks = (vnext / "detectron2/structures/masks.py").read_text()
    assert ".astype(bool)" in masks and "dtype=np.bool_" in masks and "np.int64(1)" in masks
    assert "float(2)" in masks and "x.astype(int)" in masks
    kernel = (vnext / "detectron2/layers/csrc/deformable/deform_conv_cuda_kernel.cu").read_text()
    assert "#include <ATen/cuda/Atomic.cuh>" in kernel and "THC" not in kernel
    assert 'TORCH_CHECK(false, "bad input "' in kernel and ".data_ptr<float>()" in kernel
    cu = (cutler / OPS / "src/cuda/ms_deform_attn_cuda.cu").read_text()
    assert "AT_DISPATCH_FLOATING_TYPES(value.scalar_type()" in cu
    assert "TORCH_CHECK(value.is_cuda()" in cu and ".type()" not in cu and "AT_ASSERTM" not in cu
    header = (cutler / OPS / "src/ms_deform_attn.h").read_text()
    assert "value.is_cuda()" in header and "AT_ERROR" not in header
    for rel, text in d2_projects.FILES.items():
        assert (vnext / rel).read_text() == text
    link = vnext / "detectron2/model_zoo/configs"
    assert link.is_symlink() and link.resolve() == (vnext / "configs").resolve()
    assert "VNext/detectron2/model_zoo/configs" in changed
    assert f"CutLER/{OPS}/modules/ms_deform_attn.py" in changed


def test_patch_removes_the_forwards_host_syncs(fake):
    """Patch version 2: shapes as host-side ints, no shape assert, no nonzero in the decoder,
    one layer's mask logits kept in inference; the edited modules run the same numbers."""
    torch = pytest.importorskip("torch")
    vnext, cutler = fake
    apply_patch(vnext, cutler)
    decoder = (cutler / PIXEL_DECODER).read_text()
    assert "torch.as_tensor(spatial_shapes" not in decoder
    assert "level_start_index[i + 1] - level_start_index[i]" not in decoder
    assert "[h * w for h, w in spatial_shapes]" in decoder
    assert "return memory, spatial_shapes_list, level_start_index" in decoder
    assert "spatial_shapes if spatial_shapes_list is None else spatial_shapes_list" in decoder
    msda = (cutler / OPS / "modules/ms_deform_attn.py").read_text()
    assert "assert (input_spatial_shapes" not in msda
    video = (cutler / VIDEO_DECODER).read_text()
    assert "torch.where" not in video and "masked_fill_(attn_mask.all(-1" in video
    assert "predictions_mask[-1] = None" in video

    # the level tensors: made once per shape list, equal to upstream's, usable with autograd
    ns: dict = {}
    start = decoder.index("_LEVEL_TENSORS = {}")
    exec("import torch\n" + decoder[start:decoder.index("class ", start)], ns)
    shapes = [(48, 80), (24, 40), (12, 20)]
    with torch.inference_mode():
        t, start_index = ns["_level_tensors"](shapes, "cpu")
    assert ns["_level_tensors"](list(shapes), torch.device("cpu"))[0] is t
    ref = torch.as_tensor(shapes)
    assert t.tolist() == ref.tolist() and not t.is_inference()
    assert start_index.tolist() == [0, 48 * 80, 48 * 80 + 24 * 40]
    # fully masked rows cleared as upstream's torch.where did
    mask = torch.rand(4, 3, 5) > 0.5
    mask[1, 2] = True
    mask[3, 0] = True
    upstream = mask.clone()
    upstream[torch.where(upstream.sum(-1) == upstream.shape[-1])] = False
    mask.masked_fill_(mask.all(-1, keepdim=True), False)
    assert torch.equal(mask, upstream)


def _resize_functions(cutler: Path) -> dict:
    """The patched decoder's `_resize_mask_logits`, and upstream's resize as `upstream`."""
    video = (cutler / VIDEO_DECODER).read_text()
    ns: dict = {}
    exec("import torch\nfrom torch.nn import functional as F\n"
         + video[video.index("\ndef _resize_mask_logits("):], ns)
    exec("from torch.nn import functional as F\n"
         "def upstream(outputs_mask, attn_mask_target_size):\n"
         "    b, q, t, _, _ = outputs_mask.shape\n"
         "    attn_mask = F.interpolate(outputs_mask.flatten(0, 1), size=attn_mask_target_size, "
         'mode="bilinear", align_corners=False).view(\n'
         "        b, q, t, attn_mask_target_size[0], attn_mask_target_size[1])\n"
         "    return attn_mask\n", ns)
    return ns


def test_patch_resizes_the_attention_masks_as_upstream(fake):
    """Patch version 4: the decoder's attention-mask resize goes through `_resize_mask_logits`;
    on the CPU it is upstream's call, bit for bit, batches of several clips included."""
    torch = pytest.importorskip("torch")
    vnext, cutler = fake
    apply_patch(vnext, cutler)
    video = (cutler / VIDEO_DECODER).read_text()
    assert "attn_mask = _resize_mask_logits(outputs_mask, attn_mask_target_size)" in video
    assert "F.interpolate(outputs_mask.flatten(0, 1)" not in video
    ns = _resize_functions(cutler)
    logits = torch.randn(2, 5, 3, 24, 40)
    for size in ((6, 10), (12, 20), (23, 40)):
        got = ns["_resize_mask_logits"](logits, size)
        assert got.shape == (2, 5, 3, *size)
        assert torch.equal(got, ns["upstream"](logits, size))


@pytest.mark.gpu
def test_attention_mask_resize_on_cuda_matches_upstream(fake):
    """On CUDA the channels-last resize gives upstream's attention masks (logit < 0 where the
    sigmoid is < 0.5) on the decoder's shapes, and its values to float rounding."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    vnext, cutler = fake
    apply_patch(vnext, cutler)
    ns = _resize_functions(cutler)
    torch.manual_seed(0)
    logits = torch.randn(1, 100, 64, 96, 160, device="cuda") * 4  # B, Q, T, H/4, W/4
    for size in ((12, 20), (24, 40), (48, 80)):
        got, want = ns["_resize_mask_logits"](logits, size), ns["upstream"](logits, size)
        assert got.shape == want.shape
        assert torch.equal(got.sigmoid() < 0.5, want.sigmoid() < 0.5)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
        if not torch.equal(got, want):  # the device run's log says how far from bit-identical
            warnings.warn(f"{size}: max |diff| {(got - want).abs().max().item():.2e}",
                          stacklevel=1)


# what patch version 3 defers: (file, module, its names used, a function of the file
# that uses them, its arguments)
_DEFERRED = [
    ("VNext", "detectron2/layers/roi_align.py", "torchvision.ops", "align", ("roi_align",),
     (1, 2)),
    ("VNext", "detectron2/layers/deform_conv.py", "torchvision.ops", "conv", ("deform_conv2d",),
     (1, 2, 3)),
    ("VNext", "detectron2/layers/nms.py", "torchvision.ops.boxes", "batched_nms",
     ("batched_nms",), (1, 2, 3, 4)),
    ("VNext", "detectron2/modeling/poolers.py", "torchvision.ops", "pooler", ("RoIPool",),
     (1, 2)),
    ("CutLER", "videocutler/mask2former/modeling/matcher.py", "scipy.optimize", "match",
     ("linear_sum_assignment",), (1,)),
    ("CutLER", "videocutler/mask2former_video/modeling/matcher.py", "scipy.optimize", "match",
     ("linear_sum_assignment",), (1,)),
]


def _recording_module(name: str, attrs: tuple[str, ...], calls: list) -> types.ModuleType:
    module = types.ModuleType(name)
    for attr in attrs:
        setattr(module, attr, lambda *a, _attr=attr, **k: calls.append((_attr, a, k)) or _attr)
    return module


def test_patch_defers_imports_inference_does_not_need(fake, monkeypatch):
    """Patch version 3: torchvision, scipy.optimize, timm and the YouTube-VIS data package are
    not imported with the model's modules; the stand-ins import them on first use and pass
    every argument through."""
    vnext, cutler = fake
    roots = {"VNext": vnext, "CutLER": cutler}
    upstream = {(repo, rel): (roots[repo] / rel).read_text() for repo, rel, *_ in _DEFERRED}
    apply_patch(vnext, cutler)
    heavy = ("torchvision", "torchvision.ops", "torchvision.ops.boxes", "scipy.optimize",
             "timm.models.layers")
    for name in heavy:  # importing any of them now fails
        monkeypatch.setitem(sys.modules, name, None)
    namespaces = {}
    for repo, rel, *_ in _DEFERRED:
        with pytest.raises(ImportError):
            exec(upstream[repo, rel], {})  # the test would see an import at load time
        namespaces[repo, rel] = ns = {}
        exec((roots[repo] / rel).read_text(), ns)
    swin, misc, env = ({} for _ in range(3))
    exec((cutler / "videocutler/mask2former/modeling/backbone/swin.py").read_text(), swin)
    exec((cutler / "videocutler/mask2former/utils/misc.py").read_text(), misc)
    exec((vnext / "detectron2/utils/collect_env.py").read_text(), env)

    for name in heavy:  # importable again: plain modules, then the recording ones
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    calls: list = []
    for repo, rel, module, use, attrs, args in _DEFERRED:
        monkeypatch.setitem(sys.modules, module, _recording_module(module, attrs, calls))
        calls.clear()
        assert namespaces[repo, rel][use](*args) == attrs[0], rel
        ((name, got_args, got_kwargs),) = calls
        assert name == attrs[0] and [*got_args, *got_kwargs.values()] == list(args), rel
    layers = _recording_module("timm.models.layers", ("DropPath", "to_2tuple", "trunc_normal_"),
                               calls)
    monkeypatch.setitem(sys.modules, "timm.models.layers", layers)
    assert swin["block"](0.1, 7)[:2] == ("DropPath", "to_2tuple")
    tv = _recording_module("torchvision", ("_is_tracing",), calls)
    tv.__version__ = "0.29.1"
    monkeypatch.setitem(sys.modules, "torchvision", tv)
    assert misc["tracing"]() == "_is_tracing" and env["collect_env_info"]() == "0.29.1"

    # mask2former_video: data_video loads when one of its names is first used
    monkeypatch.syspath_prepend(str(cutler / "videocutler"))
    try:
        package = importlib.import_module("mask2former_video")
        assert "mask2former_video.data_video" not in sys.modules
        assert package.YTVISEvaluator is object
        assert "mask2former_video.data_video" in sys.modules
        with pytest.raises(AttributeError, match="no attribute 'nothing'"):
            package.nothing  # noqa: B018
    finally:
        for name in [m for m in sys.modules if m.split(".")[0] == "mask2former_video"]:
            del sys.modules[name]


def test_older_patch_version_is_a_subset(fake):
    """Benchmarks compare with the patch as it was: `edits` applies only those given."""
    from wsovvis_dagster.vnext.patch import EDITS

    vnext, cutler = fake
    apply_patch(vnext, cutler, edits=[e for e in EDITS if e.since == "1"])
    assert "torch.where" in (cutler / VIDEO_DECODER).read_text()
    assert "def set_backend(" in (cutler / OPS / "functions/ms_deform_attn_func.py").read_text()
    later = {f"{e.repo}/{path}" for e in EDITS if e.since != "1" for path in e.patterns}
    assert {f"CutLER/{PIXEL_DECODER}", f"CutLER/{OPS}/modules/ms_deform_attn.py",
            f"CutLER/{VIDEO_DECODER}"} <= later
    assert {c.path for c in apply_patch(vnext, cutler).changes} == later


def test_second_run_changes_nothing(fake):
    vnext, cutler = fake
    assert apply_patch(vnext, cutler).changed
    before = _snapshot(vnext, cutler)
    again = apply_patch(vnext, cutler)
    assert not again.changed and again.summary() == "no changes (already patched)"
    assert _snapshot(vnext, cutler) == before


def test_an_edit_rewritten_since_the_checkout_was_patched_still_applies(tmp_path):
    """Each file is patched from its committed (upstream) text where an earlier patch changed
    it, so an edit whose new text changed finds the upstream lines, and the whole patch then
    leaves the tree exactly as on a fresh checkout."""
    from wsovvis_dagster.vnext.patch import Edit, _ensure_replaced

    vnext, cutler, _, _ = make_fake_checkouts(tmp_path / "old", git=True)
    matcher = "videocutler/mask2former/modeling/matcher.py"
    line = "from scipy.optimize import linear_sum_assignment"

    def edit(new: str) -> list[Edit]:
        return [Edit("CutLER", (matcher,), _ensure_replaced(line, new), "test edit")]

    apply_patch(vnext, cutler)
    apply_patch(vnext, cutler, edits=edit("# first text"))
    report = apply_patch(vnext, cutler, edits=edit("# second text"))
    text = (cutler / matcher).read_text()
    assert "# second text" in text and "# first text" not in text and line not in text
    assert [c.path for c in report.changes] == [f"CutLER/{matcher}"]

    assert apply_patch(vnext, cutler).changed  # back to the real patch
    fresh = make_fake_checkouts(tmp_path / "fresh", git=True)[:2]
    apply_patch(*fresh)
    old_tree, new_tree = ({str(Path(k).relative_to(r)): v for k, v in _snapshot(r).items()}
                          for r in (tmp_path / "old", tmp_path / "fresh"))
    assert old_tree == new_tree


def test_patch_refuses_unknown_upstream_text(fake):
    vnext, cutler = fake
    (cutler / OPS / "modules/ms_deform_attn.py").write_text("class MSDeformAttn:\n    pass\n")
    with pytest.raises(PatchError, match="ms_deform_attn.py"):
        apply_patch(vnext, cutler)


def test_patch_needs_both_checkouts(tmp_path):
    with pytest.raises(PatchError, match="materialise patched_vnext"):
        apply_patch(tmp_path / "VNext", tmp_path / "CutLER")


@pytest.fixture
def patched_ops(fake):
    vnext, cutler = fake
    apply_patch(vnext, cutler)
    root = str(cutler / "videocutler/mask2former/modeling/pixel_decoder")
    sys.path.insert(0, root)
    for name in [m for m in sys.modules if m == "ops" or m.startswith("ops.")]:
        del sys.modules[name]
    func = importlib.import_module("ops.functions.ms_deform_attn_func")
    module = importlib.import_module("ops.modules.ms_deform_attn")
    yield func, module
    sys.path.remove(root)
    for name in [m for m in sys.modules if m == "ops" or m.startswith("ops.")]:
        del sys.modules[name]


def test_patched_op_imports_without_build_and_never_falls_back_silently(patched_ops):
    func, module = patched_ops
    assert func.MSDA is None and func.BACKEND is None
    attn = module.MSDeformAttn()
    with pytest.raises(RuntimeError, match="deform_attn_ops"):
        attn.forward([1, 2])  # no backend chosen: an error, not the PyTorch path
    with pytest.raises(ModuleNotFoundError):
        func.set_backend("cuda")
    with pytest.raises(ValueError):
        func.set_backend("magic")
    func.set_backend("pytorch")
    assert attn.forward([1, 2]) == ("pytorch", [1, 2])


def test_patched_op_errors_surface_and_batch_divides_im2col_step(patched_ops):
    func, module = patched_ops
    calls = []

    class FakeOp:
        @staticmethod
        def ms_deform_attn_forward(value, shapes, start, locations, weights, step):
            calls.append(step)
            if len(value) == 3:
                raise RuntimeError("CUDA error: an illegal memory access")
            return "cuda"

    func.MSDA = FakeOp
    func.set_backend("cuda")
    attn = module.MSDeformAttn()
    assert attn.forward(list(range(130))) == "cuda"
    assert calls[-1] == 65 and 130 % calls[-1] == 0  # upstream's step 128 would not divide
    assert attn.forward(list(range(64))) == "cuda" and calls[-1] == 64
    with pytest.raises(RuntimeError, match="illegal memory access"):
        attn.forward([1, 2, 3])  # surfaces; upstream's bare except hid it


def test_checkout_pinned_from_local_repo(tmp_path):
    src = tmp_path / "upstream"
    vnext_src, _, commit, _ = make_fake_checkouts(src, git=True)
    pin = replace(VNEXT, commit=commit)
    dest = tmp_path / "third_party" / "VNext"

    first = checkout_pinned(pin, dest, str(vnext_src))
    assert first.action == "cloned" and first.commit == commit
    assert (dest / "detectron2/projects/__init__.py").exists()
    assert not (dest / "assets/demo.gif").exists()  # sparse: GIFs are never checked out

    (dest / "detectron2/data/transforms/transform.py").write_text("patched\n")
    again = checkout_pinned(pin, dest, str(vnext_src))
    assert again.action == "unchanged"  # at the pin: our patch is left in place
    assert (dest / "detectron2/data/transforms/transform.py").read_text() == "patched\n"


def test_checkout_moves_an_old_clone_to_the_pin(tmp_path):
    src = tmp_path / "upstream"
    vnext_src, _, old, _ = make_fake_checkouts(src, git=True)
    (vnext_src / "NEW").write_text("new\n")
    from wsovvis_dagster.vnext.testing import _commit

    new = _commit(vnext_src)
    dest = tmp_path / "VNext"
    checkout_pinned(replace(VNEXT, commit=old), dest, str(vnext_src))
    (dest / "setup.py").write_text("edited by hand\n")
    moved = checkout_pinned(replace(VNEXT, commit=new), dest, str(vnext_src))
    assert moved.action == "moved" and (dest / "NEW").exists()
    assert (dest / "setup.py").read_text() == "# fake VNext setup.py\n"
    assert patched_files(dest, dest) == []  # clean tree: nothing patched yet


def test_checkout_errors_name_the_fix(tmp_path):
    src = tmp_path / "upstream"
    vnext_src, _, commit, _ = make_fake_checkouts(src, git=True)
    with pytest.raises(SourceCheckoutError, match="full 40-hex"):
        checkout_pinned(replace(VNEXT, commit=commit[:7]), tmp_path / "a", str(vnext_src))
    with pytest.raises(SourceCheckoutError, match="not in"):
        checkout_pinned(replace(VNEXT, commit="0" * 40), tmp_path / "b", str(vnext_src))
    (tmp_path / "c").mkdir()
    with pytest.raises(SourceCheckoutError, match="not a git checkout"):
        checkout_pinned(replace(VNEXT, commit=commit), tmp_path / "c", str(vnext_src))
    with pytest.raises(SourceCheckoutError, match="neither a URL"):
        checkout_pinned(replace(VNEXT, commit=commit), tmp_path / "d", str(tmp_path / "nope"))


@pytest.fixture
def toolchain_config(tmp_path, monkeypatch):
    """Run config of the third_party assets on fake local sources; VNext's install, the import
    checks and the op build are stubbed (the op: the CPU's PyTorch path)."""
    from wsovvis_dagster.vnext import deform_attn, install, toolchain

    src = tmp_path / "upstream"
    vnext_src, cutler_src, vc, cc = make_fake_checkouts(src, git=True)
    installs = []
    monkeypatch.setattr(toolchain, "install_vnext", lambda path, **k: installs.append(path)
                        or install.InstallResult("python", 0.0, None, skipped=len(installs) > 1))
    fake_imports = lambda v, c, **k: install.ImportReport(  # noqa: E731
        str(v / "detectron2/__init__.py"), "0.6", str(c / "m2f.py"), None, None, 0.1)
    monkeypatch.setattr(install, "verify_imports", fake_imports)
    monkeypatch.setattr(toolchain, "verify_imports", fake_imports)
    monkeypatch.setattr(toolchain, "build_deform_attn_op", lambda *a, **k: deform_attn.OpBuild(
        "pytorch", True, "2.13.0", None, None, None, None, 0.0, ()))
    root = str(tmp_path / "tp")
    return {"ops": {
        "patched_vnext": {"config": {"root": root, "vnext_source": str(vnext_src),
                                     "cutler_source": str(cutler_src), "vnext_commit": vc,
                                     "cutler_commit": cc}},
        "deform_attn_ops": {"config": {"root": root}}}}


def test_patched_vnext_asset_is_idempotent(toolchain_config):
    """The Dagster asset on fake local sources (install and import check stubbed)."""
    from dagster import materialize

    from assets.third_party import patched_vnext

    config = {"ops": {"patched_vnext": toolchain_config["ops"]["patched_vnext"]}}
    vc, cc = (config["ops"]["patched_vnext"]["config"][k] for k in ("vnext_commit",
                                                                     "cutler_commit"))
    metas = []
    for _ in range(2):
        result = materialize([patched_vnext], run_config=config)
        assert result.success
        [mat] = result.asset_materializations_for_node("patched_vnext")
        metas.append({k: v.value for k, v in mat.metadata.items()})
        [check] = result.get_asset_check_evaluations()
        assert check.passed
    first, second = metas
    assert first["vnext_commit"] == vc and first["cutler_commit"] == cc
    assert first["files_changed_this_run"] > 10 and first["checkout"].startswith("VNext cloned")
    assert second["files_changed_this_run"] == 0 and "unchanged" in second["checkout"]
    assert second["files_patched"] == first["files_patched"]
    assert "skipped" in second["install"]


def test_speed_only_patch_version_leaves_masks_fresh(toolchain_config, monkeypatch):
    """A new PATCH_VERSION marks patched_vnext and deform_attn_ops stale, not the masks made
    after them (their data version is what the sources compute); OUTPUT_VERSION marks both."""
    from dagster import AssetKey, DagsterInstance, StaticPartitionsDefinition, asset, materialize
    from dagster._core.definitions.data_version import StaleStatus
    from dagster._utils.test.data_versions import get_stale_status_resolver

    from assets.third_party import deform_attn_ops, patched_vnext
    from wsovvis_dagster.vnext import patch

    # reads deform_attn_ops as mask_pngs does: a dependency of a per-video partitioned asset
    @asset(deps=[deform_attn_ops], partitions_def=StaticPartitionsDefinition(["v1"]),
           code_version="1")
    def masks() -> None:
        pass

    def graph(version: str) -> list:
        return [a.map_asset_specs(lambda spec: spec.replace_attributes(code_version=version))
                for a in (patched_vnext, deform_attn_ops)] + [masks]

    def status(assets: list, key: str) -> StaleStatus:
        resolver = get_stale_status_resolver(instance, assets)
        return resolver.get_status(AssetKey(key), "v1" if key == "masks" else None)

    def toolchain(assets: list) -> None:
        assert materialize(assets, selection=["patched_vnext", "deform_attn_ops"],
                           instance=instance, run_config=toolchain_config).success

    instance = DagsterInstance.ephemeral()
    old = graph("2")
    toolchain(old)
    assert materialize(old, selection=["masks"], partition_key="v1", instance=instance).success
    new = graph("3")
    assert status(new, "patched_vnext") == status(new, "deform_attn_ops") == StaleStatus.STALE
    toolchain(new)
    assert {status(new, k) for k in ("patched_vnext", "deform_attn_ops", "masks")} == {
        StaleStatus.FRESH}
    monkeypatch.setattr(patch, "OUTPUT_VERSION", "2")  # an edit that changes the numbers
    toolchain(new)
    assert status(new, "masks") == StaleStatus.STALE
