"""signver-torch: offline handwritten signature verification in PyTorch, a reimplementation of SignVer.

Four modules, each usable alone: ``detector`` (find signatures on a page), ``cleaner`` (strip lines,
text and noise from a crop), ``extractor`` (signature → 256-d embedding) and ``matcher`` (same writer
or not; identify in an enrolled gallery).
"""

from importlib import metadata as _metadata

from signver_torch.cards import FACADES as _FACADES
from signver_torch.errors import (
    AcceleratorUnavailableError,
    BlankSignatureError,
    CheckpointError,
    DataError,
    ImageLoadError,
    SignVerError,
)
from signver_torch.io import load_image, load_image_tensor, load_pages

try:
    __version__ = _metadata.version("signver-torch")
except _metadata.PackageNotFoundError:  # running from a checkout that was never installed
    __version__ = "0.0.0+unknown"

#: Public classes imported on first use, so `import signver_torch` stays light (no timm/kornia/lightning):
#: each module's facade (``cards.FACADES``), the extractor's alias, the matcher and the pipeline.
_LAZY = {
    **{name: module for module, name in _FACADES.values()},
    "Extractor": _FACADES["extractor"][0],
    "Matcher": "signver_torch.matcher.api",
    "SignVer": "signver_torch.pipeline",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'signver_torch' has no attribute {name!r}")


__all__ = [
    "Cleaner",
    "Detector",
    "Matcher",
    "SignVer",
    "Extractor",
    "MetricExtractor",
    "AcceleratorUnavailableError",
    "BlankSignatureError",
    "CheckpointError",
    "DataError",
    "ImageLoadError",
    "SignVerError",
    "__version__",
    "load_image",
    "load_image_tensor",
    "load_pages",
]
