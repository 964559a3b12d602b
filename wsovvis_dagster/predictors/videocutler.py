"""The VideoCutLER backend: CutLER's video Mask2Former (R50, class-agnostic) on VNext.

The model is built once (`build_videocutler_predictor`), then each video runs in chunks of
`chunk_size` frames stitched by `chunking.predict_chunked`, so GPU memory stays flat in video
length. Per chunk, two interchangeable paths compute the same masks:

- reference (`fast_path=False`): what CutLER's `demo_video/predictor.py:VideoPredictor` does,
  step by step (per-frame PIL resize and float copy on the CPU, all 100 query masks upsampled,
  top-10, bilinear to the frame size, `> 0`), minus detectron2's retry-on-CPU after a CUDA OOM;
- fast (`fast_path=True`): frames go to the device as uint8 once; resize, normalise and
  padding happen there; only the top-10 query masks are upsampled (upsampling is per mask, so
  they are the same numbers); tracks are composed into the id map on the device, without a
  data-dependent shape, and the `(T, H, W)` id map comes back with one wait per chunk (the
  forward has none: patch version 2). `launch` queues a chunk and returns its collector, so
  the mask loop queues the next chunk before it waits for this one. `precision` "bf16"/"fp16"
  runs the network under autocast; "tf32" keeps fp32 tensors but lets matmuls use TF32
  tensor cores (cuDNN's convolutions already do by PyTorch's default; fp32 matmuls were 1.4
  of 2.2 kernel-seconds per 400 frames in the H200 profile, docs/gpu.md).

Both keep tracks scoring >= `confidence` and write ids ordered by score (overlaps go to the
higher score), as `compose_id_maps` defines.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from wsovvis_dagster.errors import ThirdPartyError, WeightsError
from wsovvis_dagster.predictors import PredictorOutput, compose_id_maps
from wsovvis_dagster.predictors.chunking import predict_chunked
from wsovvis_dagster.predictors.settings import GPU_MEMORY_BUDGET_GIB, PredictorSettings

log = logging.getLogger(__name__)

VERSION = "videocutler-1"
CONFIG = "videocutler/configs/imagenet_video/video_mask2former_R50_cls_agnostic.yaml"
TOP_K = 10  # upstream keeps the 10 best queries per clip
PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
WEIGHTS_HELP = (
    "VideoCutLER weights (videocutler_m2f_rn50.pth) cannot be downloaded by this "
    "project: get them from the link in CutLER's videocutler/README.md (section 'Inference "
    "Demo for VideoCutLER with Pre-trained Models', Google Drive file "
    "1ozeh3U3uxZImjabKVae8kNZSoNuvFx49 at the pinned commit), copy the file to the machine and "
    "set the predictor's `weights` (env WSOVVIS_VIDEOCUTLER_WEIGHTS) to its path"
)


@dataclass(frozen=True)
class LoadTimes:
    """Seconds spent importing torch (0 when this process had), then VNext/VideoCutLER,
    building the model, loading weights and warming up."""

    imports: float
    build: float
    weights: float
    warmup: float = 0.0
    torch: float = 0.0


def _import_videocutler(cutler_root: Path):
    """Import detectron2 + VideoCutLER's packages; `<cutler_root>/videocutler` joins sys.path."""
    videocutler = str((cutler_root / "videocutler").resolve())
    if not Path(videocutler, "mask2former_video").is_dir():
        raise ThirdPartyError(f"{videocutler} has no mask2former_video: materialise patched_vnext "
                              "(or set cutler_root to a CutLER checkout)")
    if videocutler not in sys.path:
        sys.path.insert(0, videocutler)
    try:
        import detectron2.data.transforms as d2_transforms
        from detectron2.checkpoint import DetectionCheckpointer
        from detectron2.config import get_cfg
        from detectron2.modeling import build_model
        from detectron2.projects.deeplab import add_deeplab_config
        from mask2former import add_maskformer2_config
        from mask2former_video import add_maskformer2_video_config
    except ImportError as exc:
        raise ThirdPartyError(
            f"cannot import the patched VNext / VideoCutLER ({exc}): materialise patched_vnext "
            "and deform_attn_ops, or run `wsovvis doctor` for the fix"
        ) from exc
    return {
        "T": d2_transforms, "DetectionCheckpointer": DetectionCheckpointer, "get_cfg": get_cfg,
        "build_model": build_model, "add_deeplab_config": add_deeplab_config,
        "add_maskformer2_config": add_maskformer2_config,
        "add_maskformer2_video_config": add_maskformer2_video_config,
    }


def _choose_deform_attn(requested: str, device: str) -> str:
    from wsovvis_dagster.vnext.deform_attn import select_backend

    backend = requested
    if requested == "auto":
        backend = "cuda" if device.startswith("cuda") else "pytorch"
    if backend == "pytorch":
        log.warning("VideoCutLER deformable attention: PyTorch implementation (slow path) on %s",
                    device)
    try:
        select_backend(backend)
    except ModuleNotFoundError as exc:
        raise ThirdPartyError(f"{exc} (device {device}; settings.deform_attn={requested!r})") \
            from exc
    return backend


class VideoCutLERPredictor:
    """`VideoPredictor` backed by VideoCutLER. Build with `build_videocutler_predictor`."""

    name = "videocutler"

    def __init__(self, settings: PredictorSettings, model, cfg, modules: dict,
                 deform_attn: str, load_times: LoadTimes):
        import torch

        self.settings = settings
        self.model = model
        self.cfg = cfg
        self.deform_attn = deform_attn
        self.load_times = load_times
        self.device = torch.device(settings.device)
        self._T = modules["T"]
        self._resize = modules["T"].ResizeShortestEdge(
            [cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST], cfg.INPUT.MAX_SIZE_TEST
        )
        self._rgb_input = cfg.INPUT.FORMAT == "RGB"
        weights = Path(settings.weights).stem if settings.weights else "random"
        mode = f"fast-{settings.precision}" if settings.fast_path else "reference"
        self.version = f"{VERSION}+{weights}+{mode}"
        self.prefetch = False  # see chunking.predict_chunked: threads re-run cuDNN autotuning

    # ------------------------------------------------------------------ public

    @property
    def stream_chunk(self) -> tuple[int, int]:
        """The mask loop (`masks.segment.segment_videos`) streams a video in this model's own
        chunks: each `predict` call is then one `predict_clip`, stitched as `predict_chunked`
        would."""
        return self.settings.chunk_size, self.settings.chunk_overlap

    def predict(self, frames: np.ndarray) -> PredictorOutput:
        """Segment `(T, H, W, 3) uint8` RGB frames; chunks of `chunk_size`, stitched by IoU."""
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"frames must be (T, H, W, 3) uint8 RGB, got {frames.shape} "
                             f"{frames.dtype}")
        return predict_chunked(self.predict_clip, frames, chunk_size=self.settings.chunk_size,
                               overlap=self.settings.chunk_overlap, prefetch=self.prefetch)

    def predict_clip(self, frames: np.ndarray) -> PredictorOutput:
        """One forward pass over all of `frames` (the model sees them as one clip)."""
        return self.launch(frames)()

    def launch(self, frames: np.ndarray) -> Callable[[], PredictorOutput]:
        """`predict_clip`, split in two: queue the clip's work on the device and return at
        once a call that waits for it and gives its output (the fast path; the reference path
        computes here). The mask loop launches the next chunk before it collects this one, so
        the GPU does not idle while the host converts, stitches and writes. Memory stays one
        chunk's: the device runs the queued work in order and the allocator reuses, in that
        order, what a launched chunk has freed."""
        if len(frames) == 0:
            out = PredictorOutput(np.zeros((0, *frames.shape[1:3]), np.uint16), {})
            return lambda: out
        if self.settings.fast_path:
            return self._launch_fast(frames)
        masks, scores = self.clip_reference(frames)
        keep = scores >= self.settings.confidence
        out = compose_id_maps(masks[keep], scores[keep])
        return lambda: out

    # ------------------------------------------------------------------ reference path

    def clip_reference(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Upstream VideoPredictor logic: top-10 `(10, T, H, W) bool` masks and `(10,)` scores."""
        import torch
        from torch.nn import functional as F

        height, width = frames.shape[1:3]
        inputs = []
        for frame in frames:
            # upstream gets BGR and flips to RGB when INPUT.FORMAT is RGB; ours are RGB already
            image = frame if self._rgb_input else frame[:, :, ::-1]
            image = self._resize.get_transform(image).apply_image(image)
            inputs.append(torch.as_tensor(image.astype("float32").transpose(2, 0, 1)))
        with torch.no_grad():
            model = self.model
            images = [x.to(self.device) for x in inputs]
            images = [(x - model.pixel_mean) / model.pixel_std for x in images]
            images = self._image_list(images)
            outputs = model.sem_seg_head(model.backbone(images.tensor))
            cls = outputs["pred_logits"][0]
            masks = F.interpolate(outputs["pred_masks"][0], size=images.tensor.shape[-2:],
                                  mode="bilinear", align_corners=False)
            del outputs
            scores, idx = self._top_k(cls)
            img_h, img_w = images.image_sizes[0]
            masks = masks[idx][:, :, :img_h, :img_w]
            masks = F.interpolate(masks, size=(height, width), mode="bilinear",
                                  align_corners=False) > 0.0
            return masks.cpu().numpy(), scores.float().cpu().numpy()

    def _image_list(self, images):
        from detectron2.structures import ImageList

        return ImageList.from_tensors(images, self.model.size_divisibility)

    def _top_k(self, cls):
        """Softmax over classes minus no-object; the best TOP_K (query, class) pairs."""
        import torch.nn.functional as F

        num_classes = self.model.sem_seg_head.num_classes
        scores = F.softmax(cls.float(), dim=-1)[:, :-1]
        k = min(TOP_K, scores.numel())
        top, flat = scores.flatten(0, 1).topk(k, sorted=False)
        return top, flat // num_classes

    # ------------------------------------------------------------------ fast path

    def _autocast(self):
        import contextlib

        import torch

        if self.settings.precision in ("fp32", "tf32"):  # tf32: a process-wide matmul flag
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.settings.precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def _preprocess_fast(self, frames: np.ndarray):
        """uint8 frames -> normalised, padded `(T, 3, Hp, Wp)` float32 on the device."""
        import torch
        import torch.nn.functional as F

        t, height, width = frames.shape[:3]
        x = torch.from_numpy(np.ascontiguousarray(frames))
        if self.device.type == "cuda":
            x = x.pin_memory().to(self.device, non_blocking=True)
        # contiguous NCHW like upstream: a channels-last input picks other conv kernels
        x = x.permute(0, 3, 1, 2).float().contiguous()  # (T, 3, H, W), RGB
        if not self._rgb_input:
            x = x.flip(1)
        new_h, new_w = self._T.ResizeShortestEdge.get_output_shape(
            height, width, self.cfg.INPUT.MIN_SIZE_TEST, self.cfg.INPUT.MAX_SIZE_TEST
        )
        if (new_h, new_w) != (height, width):
            # PIL's bilinear resize antialiases when shrinking, as does antialias=True
            x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False,
                              antialias=True).round_().clamp_(0, 255)
        x = (x - self.model.pixel_mean[None]) / self.model.pixel_std[None]
        div = max(int(self.model.size_divisibility), 1)
        pad_h = -(-new_h // div) * div - new_h
        pad_w = -(-new_w // div) * div - new_w
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), value=0.0)
        return x, (new_h, new_w)

    def _launch_fast(self, frames: np.ndarray) -> Callable[[], PredictorOutput]:
        import torch
        import torch.nn.functional as F

        t, height, width = frames.shape[:3]
        with torch.inference_mode():
            x, (img_h, img_w) = self._preprocess_fast(frames)
            outputs = self.forward(x)
            scores, idx = self._top_k(outputs["pred_logits"][0])
            masks = outputs["pred_masks"][0][idx].float()  # (k, T, h/4, w/4)
            del outputs
            # every top-k track goes through; those under the confidence own no pixel (no
            # boolean indexing here: its data-dependent shape would wait for the GPU)
            masks = F.interpolate(masks, size=x.shape[-2:], mode="bilinear", align_corners=False)
            masks = masks[:, :, :img_h, :img_w]
            if (img_h, img_w) != (height, width):  # same size: bilinear is the identity
                masks = F.interpolate(masks, size=(height, width), mode="bilinear",
                                      align_corners=False)
            masks = masks > 0.0
            id_map, ordered, present = compose_on_device(
                masks, scores, keep=scores >= self.settings.confidence)
            return queue_fetch(id_map, ordered, present)

    def forward(self, x):
        """The network on a normalised, padded `(T, 3, Hp, Wp)` chunk: pred_logits/masks."""
        with self._autocast():
            return self.model.sem_seg_head(self.model.backbone(x))


def compose_on_device(masks, scores, keep=None):
    """`compose_id_maps` on the device, without a host sync: `(N, T, H, W)` bool masks,
    `(N,)` scores and optionally `(N,)` bool `keep` (tracks left out own no pixel).

    Returns, all on the device: the `(T, H, W)` id map (uint8 when N < 256, else int32; ids
    1..M by descending score, tracks that own no pixel dropped), the N scores sorted
    descending and an `(N,)` bool telling which of them got an id (`queue_fetch` reads the
    three back in one sync). Ties keep the input order, like the stable sort of
    `compose_id_maps`.
    """
    import torch

    n = len(scores)
    order = torch.sort(scores.float(), descending=True, stable=True).indices
    masks, scores = masks[order], scores[order]
    if keep is not None:
        masks = masks & keep[order].view(-1, *([1] * (masks.dim() - 1)))
    covered = masks.any(0)
    first = masks.to(torch.uint8).argmax(0)  # first (best-scoring) track covering each pixel
    ids = torch.where(covered, first + 1, torch.zeros_like(first))
    present = torch.zeros(n + 1, dtype=torch.int32, device=ids.device)
    present.index_fill_(0, ids.flatten(), 1)  # no data-dependent shape, so no sync
    # a kernel, not `present[0] = 0`: that copies a host scalar in, and a copy from pageable
    # memory waits for the whole queued chunk (the H200 profile: 74 % of the loop's thread)
    present[:1].zero_()
    lut = torch.cumsum(present, 0, dtype=torch.int32) * present  # rank among present tracks
    id_map = lut[ids].to(torch.uint8 if n < 256 else torch.int32)
    return id_map, scores, present[1:].bool()


def queue_fetch(id_map, scores, present) -> Callable[[], PredictorOutput]:
    """Queue the copies of `compose_on_device`'s results into pinned host memory, behind the
    work that computes them; the returned call waits for them (one event, not the whole
    device: work queued after them keeps running) and builds the `PredictorOutput`."""
    import torch

    small = torch.cat([scores.float(), present.float()])
    done = None
    if id_map.is_cuda:
        host = torch.empty(id_map.shape, dtype=id_map.dtype, pin_memory=True)
        host.copy_(id_map, non_blocking=True)
        small_host = torch.empty(small.shape, dtype=small.dtype, pin_memory=True)
        small_host.copy_(small, non_blocking=True)
        done = torch.cuda.Event()
        done.record(torch.cuda.current_stream(id_map.device))
    else:
        host, small_host = id_map, small

    def collect() -> PredictorOutput:
        if done is not None:
            done.synchronize()  # releases the GIL while it waits
        values = small_host.numpy()
        n = len(values) // 2
        kept = values[:n][values[n:] > 0.5]
        ids = host.numpy().astype(np.uint16)
        return PredictorOutput(ids, {i + 1: float(s) for i, s in enumerate(kept)})

    return collect


def check_checkpoint_format(path: Path) -> None:
    """Refuse a file that is neither a torch.save zip nor a pickle (e.g. a saved error page),
    before anything is imported or built on the GPU."""
    with open(path, "rb") as fh:
        head = fh.read(2)
    if zipfile.is_zipfile(path) or head[:1] == b"\x80":  # zip (torch>=1.6) or pickle protocol
        return
    raise WeightsError(
        f"weights file {path} is not a PyTorch checkpoint (starts with {head!r}; a failed "
        f"download?). {WEIGHTS_HELP}"
    )


def build_videocutler_predictor(settings: PredictorSettings) -> VideoCutLERPredictor:
    """Import the patched VNext/VideoCutLER, build the model once on `settings.device`."""
    t_torch = time.monotonic()
    import torch

    torch_s = time.monotonic() - t_torch

    if settings.precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {settings.precision!r}")
    if settings.weights and not Path(settings.weights).is_file():
        raise WeightsError(f"weights file {settings.weights} does not exist. {WEIGHTS_HELP}")
    if settings.weights:
        check_checkpoint_format(Path(settings.weights))
    if not settings.weights and not settings.allow_random_weights:
        raise WeightsError(f"no VideoCutLER weights given. {WEIGHTS_HELP}")
    cutler_root = Path(settings.cutler_root)
    if settings.device.startswith("cuda") and 0 < settings.gpu_memory_gib < GPU_MEMORY_BUDGET_GIB:
        # runs sharing a GPU get part of the budget; at 9 GiB the default allocator ran out
        # with 2.2 GiB reserved but fragmented, expandable segments fit (docs/gpu.md). Read when
        # this process first touches CUDA, so set before the model is built.
        os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    t0 = time.monotonic()
    mods = _import_videocutler(cutler_root)
    deform_attn = _choose_deform_attn(settings.deform_attn, settings.device)
    t1 = time.monotonic()
    cfg = mods["get_cfg"]()
    mods["add_deeplab_config"](cfg)
    mods["add_maskformer2_config"](cfg)
    mods["add_maskformer2_video_config"](cfg)
    cfg.merge_from_file(settings.config_file or str(cutler_root / CONFIG))
    # the config names the *image* model's weights: always override with ours (or none)
    cfg.MODEL.WEIGHTS = settings.weights
    cfg.MODEL.DEVICE = settings.device
    cfg.freeze()
    if not settings.weights:
        log.warning("TESTING ONLY: VideoCutLER built with RANDOM weights "
                    "(allow_random_weights=True); its masks mean nothing")
        torch.manual_seed(0)
    model = mods["build_model"](cfg)
    model.eval()
    t2 = time.monotonic()
    if settings.weights:
        try:
            mods["DetectionCheckpointer"](model).load(settings.weights)
        except (OSError, RuntimeError, KeyError, ValueError) as exc:
            raise WeightsError(f"cannot load weights {settings.weights}: {exc}. {WEIGHTS_HELP}") \
                from exc
    on_cuda = settings.device.startswith("cuda")
    if on_cuda:
        if settings.gpu_memory_gib:
            # cuDNN's autotuning (when on) takes workspaces as large as the allocator allows
            # (47 GiB on an H200); an allocator cap is what bounds it (CUDNN_CONV_WSCAP_DBG
            # did not)
            device = torch.device(settings.device)
            total = torch.cuda.get_device_properties(device).total_memory
            torch.cuda.set_per_process_memory_fraction(
                min(1.0, settings.gpu_memory_gib * 2**30 / total), device)
        torch.backends.cudnn.benchmark = settings.cudnn_benchmark
        # process-wide; a worker or run serves one precision (it is in the worker's settings)
        torch.backends.cuda.matmul.allow_tf32 = settings.precision == "tf32"
    t3 = time.monotonic()
    times = LoadTimes(imports=t1 - t0, build=t2 - t1, weights=t3 - t2, torch=torch_s)
    pred = VideoCutLERPredictor(settings, model, cfg, mods, deform_attn, times)
    if on_cuda and settings.warmup:
        warm_up(pred)
    pred.load_times = times = replace(times, warmup=time.monotonic() - t3)
    log.info("VideoCutLER ready on %s (deformable attention: %s; torch %.1fs, imports %.1fs, "
             "build %.1fs, weights %.1fs, warm-up %.1fs)", settings.device, deform_attn,
             times.torch, times.imports, times.build, times.weights, times.warmup)
    return pred


WARMUP_SIZE = (360, 640)  # (H, W) of the warm-up chunk: LV-VIS / DAVIS 480p-class frames


def warm_up(pred: VideoCutLERPredictor, size: tuple[int, int] = WARMUP_SIZE) -> None:
    """One full chunk on random frames, at build time: CUDA loads the chunk's kernels (and
    cuDNN autotunes its shape, when on) here, not inside the first video, and the cache it
    leaves is released."""
    import torch

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (pred.settings.chunk_size, *size, 3), dtype=np.uint8)
    pred.predict_clip(frames)
    torch.cuda.synchronize(pred.device)
    torch.cuda.empty_cache()
