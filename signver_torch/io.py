"""The one image loader every module uses.

Scans arrive as files, bytes, PIL images, numpy arrays and tensors, in every PIL mode (CEDAR alone
mixes ``L``, ``P`` and ``RGBA`` PNGs). Each is converted explicitly, so a palette image, a 16-bit scan
or a transparent PNG means the same ink on the same white paper everywhere in the library, and every
failure is an :class:`~signver_torch.errors.ImageLoadError` that names the file.
"""

from __future__ import annotations

import io
import os
import sys
import threading
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Union

import numpy as np
from PIL import Image, ImageOps, ImageSequence, UnidentifiedImageError

from signver_torch.errors import ImageLoadError

if TYPE_CHECKING:
    import torch

ImageSource = Union[str, os.PathLike, bytes, bytearray, Image.Image, np.ndarray, "torch.Tensor"]
OutputMode = Literal["RGB", "L"]

#: Refuse images above this many pixels before decoding them (a 600 dpi A3 scan is ~70 MP).
DEFAULT_MAX_PIXELS = 100_000_000

#: File suffixes read as images when a folder is scanned (the loader reads whatever PIL opens).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp")
#: Resolution at which PDF pages are rasterised (the detector was trained on ~200 dpi scans).
PDF_DPI = 200
#: PDFium is not thread-safe: every call into it holds this lock (a service reads PDFs in several threads).
_PDFIUM = threading.Lock()
#: Documents with more pages than this are refused (a service's upload limit).
DEFAULT_MAX_PAGES = 50

_WHITE = {"RGB": (255, 255, 255), "L": 255}
#: Our own ``max_pixels`` check replaces PIL's decompression-bomb warning (its hard error, at twice its limit, stays).
#: One filter for the process, not a ``catch_warnings`` block per image: those save and restore the process-wide
#: filters and are not thread-safe, and images are decoded on several threads (a service, the extractor's host steps).
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def load_image(
    source: ImageSource,
    mode: OutputMode = "RGB",
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    name: str | None = None,
) -> Image.Image:
    """Load ``source`` as an 8-bit ``RGB`` or ``L`` PIL image, upright and on a white background.

    Args:
        source: a path, encoded bytes, a PIL image, a numpy array (``HxW``, ``HxWxC``; uint8, uint16,
            bool, or float in ``[0, 1]``) or a tensor (``HxW`` or ``CxHxW``; uint8 or float in ``[0, 1]``).
        mode: ``"RGB"`` or ``"L"`` (grayscale).
        max_pixels: images larger than this are refused before decoding (decompression bombs).
        name: how to call the image in error messages; defaults to the path or the input type.

    Raises:
        ImageLoadError: the file is missing, empty, truncated, not an image, too large, or the array
            has an unusable shape, dtype or value range.
    """
    if mode not in _WHITE:
        raise ValueError(f"mode must be 'RGB' or 'L', got {mode!r}")
    if isinstance(source, (str, os.PathLike)):
        label = name or str(source)
        return _convert(_decode_file(Path(source), label, max_pixels), mode, label)
    if isinstance(source, (bytes, bytearray)):
        label = name or "<bytes>"
        if not source:
            raise ImageLoadError(f"{label}: empty input (0 bytes)")
        return _convert(_decode(io.BytesIO(source), label, max_pixels), mode, label)
    if isinstance(source, Image.Image):
        label = name or "<PIL image>"
        return _convert(_finish_decoding(source, label, max_pixels), mode, label)
    if is_tensor(source):
        label = name or "<tensor>"
        return _convert(_array_to_pil(_tensor_to_hwc(source, label), label), mode, label)
    if isinstance(source, np.ndarray):
        label = name or "<array>"
        return _convert(_array_to_pil(source, label), mode, label)
    raise ImageLoadError(
        f"{name or '<input>'}: cannot read an image from {type(source).__name__}; "
        "pass a path, bytes, a PIL image, a numpy array or a tensor"
    )


def load_image_tensor(
    source: ImageSource,
    mode: OutputMode = "L",
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    name: str | None = None,
) -> torch.Tensor:
    """Load ``source`` like :func:`load_image` and return a float ``CxHxW`` tensor in ``[0, 1]``."""
    import torch

    return torch.from_numpy(load_image_array(source, mode, max_pixels=max_pixels, name=name))


def load_image_array(
    source: ImageSource,
    mode: OutputMode = "L",
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    name: str | None = None,
) -> np.ndarray:
    """Load ``source`` like :func:`load_image` and return a float32 ``CxHxW`` array in ``[0, 1]``: what
    :func:`load_image_tensor` holds, for the paths that run without torch (``cards.TORCH_FREE_FACADES``)."""
    array = np.asarray(load_image(source, mode, max_pixels=max_pixels, name=name), dtype=np.float32)
    if array.ndim == 2:
        array = array[:, :, None]
    return np.ascontiguousarray((array / 255.0).transpose(2, 0, 1))


def is_tensor(value: object) -> bool:
    """Whether ``value`` is a torch tensor, without importing torch: whoever holds a tensor has imported it."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def load_pages(
    source: str | os.PathLike | bytes | bytearray,
    mode: OutputMode = "RGB",
    *,
    dpi: int = PDF_DPI,
    max_pages: int = DEFAULT_MAX_PAGES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    name: str | None = None,
) -> list[Image.Image]:
    """Every page of a document: one for PNG/JPEG, each frame of a multi-page TIFF, each page of a PDF
    (rasterised at ``dpi`` with pypdfium2). Each page goes through :func:`load_image`'s checks.

    Raises:
        ImageLoadError: as :func:`load_image`, and for a PDF that cannot be read, a document with no
            pages or more than ``max_pages``.
    """
    label = name or (str(source) if isinstance(source, (str, os.PathLike)) else "<bytes>")
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        _check_file(path, label)
        try:
            data = path.read_bytes()
        except OSError as error:
            raise ImageLoadError(f"{label}: cannot read file ({error.strerror or error})") from error
    elif isinstance(source, (bytes, bytearray)):
        data = bytes(source)
        if not data:
            raise ImageLoadError(f"{label}: empty input (0 bytes)")
    else:
        raise ImageLoadError(f"{label}: load_pages reads files or bytes, not {type(source).__name__}")
    if data[:5] == b"%PDF-":
        return [_convert(page, mode, f"{label} page {number}")
                for number, page in enumerate(_rasterise_pdf(data, label, dpi, max_pages, max_pixels), start=1)]
    try:
        document = Image.open(io.BytesIO(data))
        frames = getattr(document, "n_frames", 1)
    except UnidentifiedImageError as error:
        raise ImageLoadError(f"{label}: not an image or PDF file (no known format)") from error
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as error:
        raise ImageLoadError(f"{label}: truncated or corrupt image ({error})") from error
    if frames > max_pages:
        raise ImageLoadError(f"{label}: {frames} pages, above the limit of {max_pages}")
    if frames == 1:
        return [_convert(_finish_decoding(document, label, max_pixels), mode, label)]
    pages = []
    for number, frame in enumerate(ImageSequence.Iterator(document), start=1):
        where = f"{label} page {number}"
        _check_size(frame.size, where, max_pixels)  # before the frame is decoded: PIL checks only the first
        pages.append(_convert(_finish_decoding(frame.copy(), where, max_pixels), mode, where))
    return pages


def _rasterise_pdf(data: bytes, label: str, dpi: int, max_pages: int, max_pixels: int) -> list[Image.Image]:
    try:
        import pypdfium2
    except ImportError:
        raise ImageLoadError(f"{label}: reading PDFs needs pypdfium2 (pip install 'signver-torch[serve]')") from None
    with _PDFIUM:  # PDFium must never run in two threads at once, even on different documents
        return _rasterise_pdf_locked(pypdfium2, data, label, dpi, max_pages, max_pixels)


def _rasterise_pdf_locked(pypdfium2: Any, data: bytes, label: str, dpi: int, max_pages: int, max_pixels: int) -> list[Image.Image]:
    try:
        document = pypdfium2.PdfDocument(data)
    except pypdfium2.PdfiumError as error:
        raise ImageLoadError(f"{label}: not a readable PDF ({error})") from error
    try:
        if len(document) == 0:
            raise ImageLoadError(f"{label}: the PDF has no pages")
        if len(document) > max_pages:
            raise ImageLoadError(f"{label}: {len(document)} pages, above the limit of {max_pages}")
        pages = []
        for number in range(len(document)):
            page = document[number]
            width, height = (round(side * dpi / 72) for side in page.get_size())
            _check_size((width, height), f"{label} page {number + 1}", max_pixels)
            pages.append(page.render(scale=dpi / 72).to_pil().copy())  # own pixels, not the bitmap's buffer
            page.close()
        return pages
    finally:
        document.close()


def _check_file(path: Path, label: str) -> None:
    if not path.exists():
        raise ImageLoadError(f"{label}: file not found")
    if path.is_dir():
        raise ImageLoadError(f"{label}: is a directory, not an image file")
    if path.stat().st_size == 0:
        raise ImageLoadError(f"{label}: empty file (0 bytes)")


def _decode_file(path: Path, label: str, max_pixels: int) -> Image.Image:
    _check_file(path, label)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ImageLoadError(f"{label}: cannot read file ({error.strerror or error})") from error
    return _decode(io.BytesIO(data), label, max_pixels)


def _check_size(size: tuple[int, int], label: str, max_pixels: int) -> None:
    width, height = size
    if width < 1 or height < 1:
        raise ImageLoadError(f"{label}: image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise ImageLoadError(
            f"{label}: image is {width}x{height} = {width * height:,} pixels, above the limit of "
            f"{max_pixels:,} (possible decompression bomb; raise max_pixels if the scan is genuine)"
        )


def _decode(stream: io.BytesIO, label: str, max_pixels: int) -> Image.Image:
    """Open an encoded image (the header only), then size-check, decode and EXIF-rotate it."""
    try:
        image = Image.open(stream)
    except UnidentifiedImageError as error:
        raise ImageLoadError(f"{label}: not an image file (no known image format)") from error
    except Image.DecompressionBombError as error:
        raise ImageLoadError(f"{label}: refused as a possible decompression bomb ({error})") from error
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise ImageLoadError(f"{label}: truncated or corrupt image ({error})") from error
    return _finish_decoding(image, label, max_pixels)


def _finish_decoding(image: Image.Image, label: str, max_pixels: int) -> Image.Image:
    """Size-check before decoding, decode fully, honour EXIF orientation; any PIL image goes through here."""
    _check_size(image.size, label, max_pixels)
    try:
        image.load()
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise ImageLoadError(f"{label}: truncated or corrupt image ({error})") from error
    try:
        return ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, ValueError, KeyError, TypeError) as error:
        raise ImageLoadError(f"{label}: corrupt EXIF orientation data ({error})") from error


def _convert(image: Image.Image, mode: OutputMode, label: str) -> Image.Image:
    """Convert any PIL mode explicitly to 8-bit ``mode``; transparency becomes white paper."""
    source_mode = image.mode
    if source_mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif source_mode == "PA":
        image = image.convert("RGBA")
    elif source_mode == "1":
        image = image.convert("L")
    elif source_mode.startswith("I") or source_mode == "F":
        image = _rescale_to_8bit(image, label)
    elif source_mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        image = image.convert("RGB")

    if image.mode in ("RGBA", "LA", "RGBa", "La"):
        image = image.convert("RGBA" if image.mode.startswith("RGB") else "LA")
        background = Image.new(image.mode[:-1], image.size, _WHITE["RGB" if image.mode == "RGBA" else "L"])
        background.paste(image, mask=image.getchannel("A"))
        image = background
    if image.mode not in ("L", "RGB"):
        raise ImageLoadError(f"{label}: unsupported image mode {source_mode!r}")
    return image if image.mode == mode else image.convert(mode)


def _rescale_to_8bit(image: Image.Image, label: str) -> Image.Image:
    """Map 16-bit, 32-bit integer and float grayscale onto 0..255 by the mode's own range."""
    values = np.asarray(image, dtype=np.float64)
    if not np.isfinite(values).all():
        raise ImageLoadError(f"{label}: image contains NaN or infinite values")
    if image.mode == "F":
        scale = 255.0 if values.max(initial=0) <= 1.0 else 1.0
    elif image.mode.startswith("I;16") or values.max(initial=0) > 255:
        scale = 255.0 / 65535.0
    else:
        scale = 1.0
    return Image.fromarray(np.clip(values * scale, 0, 255).round().astype(np.uint8))


def _tensor_to_hwc(tensor: torch.Tensor, label: str) -> np.ndarray:
    import torch  # already imported by whoever holds a tensor

    array = tensor.detach().cpu()
    if array.ndim == 3:
        if array.shape[0] not in (1, 3, 4):
            raise ImageLoadError(f"{label}: expected a CxHxW tensor with C in 1, 3, 4; got shape {tuple(array.shape)}")
        array = array.permute(1, 2, 0)
    if array.dtype == torch.bfloat16 or array.dtype == torch.float16:
        array = array.float()
    return array.numpy()


def _array_to_pil(array: np.ndarray, label: str) -> Image.Image:
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ImageLoadError(
            f"{label}: expected HxW, HxWx1, HxWx3 or HxWx4 pixels; got shape {tuple(array.shape)}"
        )
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise ImageLoadError(f"{label}: image has no pixels (shape {tuple(array.shape)})")
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    elif array.dtype == np.uint16:
        array = (array.astype(np.float64) * (255.0 / 65535.0)).round().astype(np.uint8)
    elif np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ImageLoadError(f"{label}: image contains NaN or infinite values")
        low, high = float(array.min()), float(array.max())
        if low < 0.0 or high > 1.0:
            raise ImageLoadError(
                f"{label}: float pixels must lie in [0, 1]; got values from {low:g} to {high:g}"
            )
        array = (array * 255.0).round().astype(np.uint8)
    elif array.dtype != np.uint8:
        raise ImageLoadError(f"{label}: unsupported pixel dtype {array.dtype} (use uint8, uint16, bool or float)")
    return Image.fromarray(np.ascontiguousarray(array))
