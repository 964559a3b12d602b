"""Typed errors. Every message names the file involved and what to do about it."""


class WsovvisError(Exception):
    """Base class for every error this project raises on purpose."""


class UnsafeNameError(WsovvisError, ValueError):
    """A video id, split or partition key that could escape its root or break selection."""


class FrameError(WsovvisError):
    """A frame folder or JPEG that cannot be read as a video."""


class VideoExistsError(WsovvisError, FileExistsError):
    """A frame folder that would be overwritten without being asked to (`--force`)."""


class MaskFormatError(WsovvisError):
    """A mask PNG or mask folder that does not follow the `mask_<frame>.png` id-map format."""


class MissingMasksError(WsovvisError):
    """Videos that are registered but have no mask PNGs yet."""


class TubeFormatError(WsovvisError):
    """A tube / results JSON that does not follow the YouTube-VIS format."""


class ThirdPartyError(WsovvisError):
    """VNext / CutLER sources, weights or the CUDA op are missing or broken."""


class SourceCheckoutError(ThirdPartyError):
    """A VNext / CutLER checkout that cannot be brought to its pinned commit."""


class PatchError(ThirdPartyError):
    """Our patch found upstream text it does not recognise (wrong commit or edited by hand)."""


class CudaToolkitError(ThirdPartyError):
    """No usable CUDA toolkit, or one whose version does not match torch's CUDA."""


class OpBuildError(ThirdPartyError):
    """An editable install or an op build (detectron2, MultiScaleDeformableAttention) failed."""


class WeightsError(ThirdPartyError):
    """VideoCutLER weights missing, unreadable, or random weights used without the test flag."""


class OutputWriteError(WsovvisError, OSError):
    """Writing an output (mask folder, tube JSON) failed, e.g. disk full; earlier outputs stay."""
