"""The image loader (``io.py``) on real files of every mode, on every kind of bad input, and on documents of
several pages (TIFF, PDF)."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from signver_torch import ImageLoadError, SignVerError, load_image, load_image_tensor
from signver_torch.io import load_pages

from tests.conftest import EXAMPLES


INK, PAPER = 20, 240


def stroke_page(size: tuple[int, int] = (64, 48)) -> np.ndarray:
    """A white page with a dark horizontal stroke in rows 20..27 (uint8 grayscale)."""
    page = np.full(size[::-1], PAPER, np.uint8)
    page[20:28, 8:56] = INK
    return page


def assert_stroke(image: Image.Image) -> None:
    gray = np.asarray(image.convert("L"))
    assert gray.shape == (48, 64)
    assert gray[20:28, 8:56].max() < 80, "ink should stay dark"
    assert gray[:15].min() > 200 and gray[35:].min() > 200, "paper should stay light"


def save_in_mode(page: np.ndarray, mode: str, path: Path) -> Path:
    gray = Image.fromarray(page)
    if mode == "1":
        image = gray.point(lambda v: 255 if v > 128 else 0).convert("1")
    elif mode == "P":
        image = gray.convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    elif mode == "RGBA":
        rgba = np.zeros((*page.shape, 4), np.uint8)  # transparent everywhere but the ink
        rgba[page == INK] = (INK, INK, INK, 255)
        image = Image.fromarray(rgba)
    elif mode == "LA":
        image = Image.merge("LA", (gray, Image.fromarray(np.where(page == INK, 255, 0).astype(np.uint8))))
    elif mode == "I;16":
        image = Image.fromarray(page.astype(np.uint16) * 257)
        assert image.mode.startswith("I;16")
    elif mode == "CMYK":
        image = gray.convert("RGB").convert("CMYK")
    else:
        image = gray.convert(mode)
    target = path / f"page_{mode.replace(';', '_')}.{'tiff' if mode == 'CMYK' else 'png'}"
    image.save(target)
    assert Image.open(target).mode.startswith(mode.split(";")[0])
    return target


@pytest.mark.parametrize("mode", ["1", "L", "P", "RGB", "RGBA", "LA", "I;16", "CMYK"])
@pytest.mark.parametrize("output", ["RGB", "L"])
def test_every_pil_mode_becomes_the_same_ink_on_white(tmp_path: Path, mode: str, output: str) -> None:
    path = save_in_mode(stroke_page(), mode, tmp_path)
    image = load_image(path, output)
    assert image.mode == output
    assert_stroke(image)


def test_transparent_background_becomes_white_paper(tmp_path: Path) -> None:
    gray = np.asarray(load_image(save_in_mode(stroke_page(), "RGBA", tmp_path), "L"))
    assert gray[0, 0] == 255 and gray[22, 10] == INK


def test_sixteen_bit_scan_keeps_its_grey_levels(tmp_path: Path) -> None:
    ramp = (np.arange(256, dtype=np.uint16).repeat(4).reshape(32, 32) * 257)
    path = tmp_path / "ramp16.png"
    Image.fromarray(ramp).save(path)
    assert np.array_equal(np.asarray(load_image(path, "L")), (ramp // 257).astype(np.uint8))


def test_exif_orientation_is_honoured(tmp_path: Path) -> None:
    stored = np.full((40, 60), 255, np.uint8)
    stored[:, :30] = 0  # dark left half as stored
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif, quality=95)
    for source in (path, Image.open(path)):  # a file and an already-opened PIL image alike
        upright = np.asarray(load_image(source, "L"))
        assert upright.shape == (60, 40), "width and height swap after the rotation"
        assert upright[:25].mean() < 40 and upright[35:].mean() > 215, "the stored left half is now on top"


@pytest.mark.parametrize("kind", ["L", "P", "RGBA"])
def test_real_cedar_modes_load_as_dark_ink_on_white(small_data: Path, kind: str) -> None:
    for path in sorted((small_data / "cedar").glob("full_*/*.png")):
        if Image.open(path).mode == kind:
            break
    else:
        pytest.fail(f"no CEDAR file in mode {kind}")
    gray = np.asarray(load_image(path, "L"))
    assert gray.ndim == 2 and gray.shape == Image.open(path).size[::-1]
    assert np.percentile(gray, 50) > 200, "background is light"
    assert gray.min() < 120, "there is ink"


def test_sources_of_every_type_agree(tmp_path: Path) -> None:
    page = stroke_page()
    path = save_in_mode(page, "L", tmp_path)
    reference = np.asarray(load_image(path, "L"))
    sources = [
        str(path),
        path.read_bytes(),
        Image.open(path),
        page,
        page[:, :, None],
        page.astype(np.float32) / 255.0,
        torch.from_numpy(page)[None],
        torch.from_numpy(page).float().div(255).expand(3, -1, -1),
    ]
    for source in sources:
        assert np.array_equal(np.asarray(load_image(source, "L")), reference), type(source)
    tensor = load_image_tensor(path)
    assert tensor.shape == (1, 48, 64) and tensor.dtype == torch.float32
    assert torch.allclose(tensor[0], torch.tensor(reference).float() / 255)


def write_png_header_claiming(path: Path, width: int, height: int) -> None:
    """A small PNG whose header claims ``width`` x ``height``: a decompression bomb's signature."""
    buffer = path.with_suffix(".tmp.png")
    Image.new("L", (8, 8), 255).save(buffer)
    data = bytearray(buffer.read_bytes())
    ihdr = bytearray(data[12:29])  # b"IHDR" + 13 bytes of header fields
    ihdr[4:12] = struct.pack(">II", width, height)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)) & 0xFFFFFFFF)
    path.write_bytes(bytes(data))


def bad_file(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"{kind}.png"
    if kind == "missing":
        return path
    if kind == "empty":
        path.touch()
    elif kind == "text":
        path.write_text("this is not an image\n")
    elif kind == "truncated":
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200), dtype=np.uint8)).save(path)
        path.write_bytes(path.read_bytes()[:2000])
    elif kind == "bomb":
        write_png_header_claiming(path, 40_000, 40_000)
    elif kind == "directory":
        path.mkdir()
    return path


@pytest.mark.parametrize(
    "kind, problem",
    [
        ("missing", "not found"),
        ("empty", "empty"),
        ("text", "not an image"),
        ("truncated", "truncated"),
        ("bomb", "decompression bomb"),
        ("directory", "directory"),
    ],
)
def test_bad_files_are_refused_naming_the_file(tmp_path: Path, kind: str, problem: str) -> None:
    path = bad_file(tmp_path, kind)
    with pytest.raises(ImageLoadError) as caught:
        load_image(path)
    assert str(path) in str(caught.value)
    assert problem in str(caught.value)
    assert isinstance(caught.value, SignVerError)


def test_max_pixels_is_configurable(tmp_path: Path) -> None:
    path = save_in_mode(stroke_page(), "L", tmp_path)
    with pytest.raises(ImageLoadError, match="above the limit"):
        load_image(path, max_pixels=1000)
    bomb = tmp_path / "big_header.png"
    write_png_header_claiming(bomb, 10_000, 9_500)  # 95 MP: above PIL's warning level, below our default
    with pytest.raises(ImageLoadError, match="truncated or corrupt"):
        load_image(bomb)  # passes the size check, then fails honestly on the missing pixel data
    with pytest.raises(ImageLoadError, match="above the limit"):
        load_image(bomb, max_pixels=50_000_000)


def test_truncated_pil_image_is_refused_naming_it(tmp_path: Path) -> None:
    path = bad_file(tmp_path, "truncated")
    with pytest.raises(ImageLoadError, match="scan-7: truncated"):
        load_image(Image.open(path), name="scan-7")


@pytest.mark.parametrize(
    "array, problem",
    [
        (np.full((8, 8), np.nan, np.float32), "NaN"),
        (np.full((8, 8), 3.0, np.float32), r"\[0, 1\]"),
        (np.zeros((8, 8, 5), np.uint8), "shape"),
        (np.zeros((0, 8), np.uint8), "no pixels"),
        (np.zeros((8, 8), np.int64), "dtype"),
        (torch.zeros(7, 8, 8), "CxHxW"),
    ],
)
def test_bad_arrays_are_refused(array: object, problem: str) -> None:
    with pytest.raises(ImageLoadError, match=problem):
        load_image(array, name="crop-3")


def test_empty_bytes_and_unknown_types_are_refused() -> None:
    with pytest.raises(ImageLoadError, match="empty"):
        load_image(b"")
    with pytest.raises(ImageLoadError, match="cannot read an image from list"):
        load_image([[0, 1]])  # type: ignore[arg-type]


def two_page(format: str) -> bytes:
    pages = [Image.open(EXAMPLES / "contract.png").convert("RGB"), Image.open(EXAMPLES / "contract_forged.png").convert("RGB")]
    buffer = io.BytesIO()
    pages[0].save(buffer, format=format, save_all=True, append_images=pages[1:], **({"resolution": 100.0} if format == "PDF" else {}))
    return buffer.getvalue()


def test_load_pages_reads_tiff_frames_and_pdf_pages(tmp_path: Path) -> None:
    pytest.importorskip("pypdfium2", reason="the serve extra is not installed")
    tiff, pdf = tmp_path / "both.tiff", tmp_path / "both.pdf"
    tiff.write_bytes(two_page("TIFF"))
    pdf.write_bytes(two_page("PDF"))
    frames = load_pages(tiff)
    assert [page.size for page in frames] == [(900, 900)] * 2 and frames[0].mode == "RGB"
    rasterised = load_pages(pdf, dpi=100)  # written at 100 dpi: read back at 100 dpi, the pixels' size returns
    assert len(rasterised) == 2 and all(abs(page.width - 900) <= 1 for page in rasterised)
    assert load_pages(pdf, dpi=200)[0].width == pytest.approx(1800, abs=2)
    with pytest.raises(ImageLoadError, match="2 pages, above the limit of 1"):
        load_pages(pdf, max_pages=1)
    with pytest.raises(ImageLoadError, match="bad.pdf: not a readable PDF"):
        load_pages(b"%PDF-1.7 nothing else", name="bad.pdf")
    with pytest.raises(ImageLoadError, match="file not found"):
        load_pages(tmp_path / "missing.pdf")


def test_a_tiff_page_too_large_is_refused_before_it_is_decoded() -> None:
    small, huge = Image.new("L", (100, 100), 255), Image.new("L", (4000, 3000), 255)
    buffer = io.BytesIO()
    small.save(buffer, format="TIFF", save_all=True, append_images=[huge], compression="tiff_deflate")
    with pytest.raises(ImageLoadError, match="scan.tiff page 2: image is 4000x3000"):
        load_pages(buffer.getvalue(), max_pixels=1_000_000, name="scan.tiff")
