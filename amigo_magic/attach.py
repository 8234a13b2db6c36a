"""Pictures that go with a prompt: recognising one (a matplotlib figure, a PIL image, an
``IPython.display.Image``, anything with ``_repr_png_`` / ``_repr_jpeg_``), reading an attached
file (a picture, or text), downscaling it, and the image part of the user message it becomes.

A picture is sent at most :data:`MAX_SIDE` pixels on its longer side and :data:`MAX_BYTES`
bytes. A figure is drawn at that size (matplotlib is loaded: the figure exists); other pictures
are scaled with Pillow only when the notebook has already imported it (matplotlib does) —
nothing is ever imported here for it. Without Pillow a larger picture goes as it is, if its
bytes fit. Types are recognised by name, so no library is imported to ask.

Pure: no IPython, no network. Sizes are read from the PNG, JPEG, GIF and WebP headers.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .history import StoredImage

__all__ = [
    "MAX_BYTES",
    "MAX_SIDE",
    "Picture",
    "from_bytes",
    "picture_of",
    "picture_tokens",
    "read_attachment",
    "size_of",
]

MAX_SIDE = 1024  # pixels on the longer side: what vision models read well, ~765 tokens
MIN_SIDE = 512  # the smallest a picture is scaled to when the budget is tight
MAX_BYTES = 4 * 2**20  # one picture as sent (the strictest common limit is 5 MB)
READ_LIMIT = 64 * 2**20  # an attached file
MIMES = ("image/png", "image/jpeg", "image/gif", "image/webp")


@dataclass(frozen=True, slots=True)
class Picture:
    """One picture as it is sent: its bytes, where it came from, its size in pixels."""

    mime: str
    data: bytes
    label: str  # "{fig}", "chart.png", "In [4]"
    width: int
    height: int

    @property
    def tokens(self) -> int:
        return picture_tokens(self.width, self.height)

    def part(self) -> dict[str, Any]:
        """The message part: ``{"type": "image_url", "image_url": {"url": "data:…"}}``."""
        url = f"data:{self.mime};base64,{base64.b64encode(self.data).decode('ascii')}"
        return {"type": "image_url", "image_url": {"url": url}}

    def stored(self) -> StoredImage:
        return StoredImage(self.mime, self.data, self.label)

    def describe(self) -> str:
        kind = self.mime.split("/")[-1].upper()
        size = f"{len(self.data) / 1024:,.0f} KB" if len(self.data) >= 1024 else "<1 KB"
        return f"{self.label}: {kind} {self.width}x{self.height}, {size}, ~{self.tokens:,} tokens"


def picture_tokens(width: int, height: int) -> int:
    """Tokens a picture is likely to cost, as OpenAI counts them (high detail): fitted into
    2048 px, the shorter side to 768 px, then 170 a 512-px tile plus 85."""
    scale = min(1.0, 2048 / max(width, height, 1))
    w, h = width * scale, height * scale
    scale = min(1.0, 768 / max(min(w, h), 1))
    w, h = w * scale, h * scale
    return 85 + 170 * math.ceil(w / 512) * math.ceil(h / 512)


def _fitting_side(width: int, height: int, budget: int) -> int | None:
    """The longest side (≤ MAX_SIDE) at which the picture costs at most ``budget`` tokens."""
    for side in (MAX_SIDE, 768, MIN_SIDE):
        scale = min(1.0, side / max(width, height, 1))
        if picture_tokens(round(width * scale), round(height * scale)) <= budget:
            return side
    return None


# -- recognising a picture ------------------------------------------------------------------------


def _names(value: Any) -> set[str]:
    return {f"{cls.__module__}.{cls.__qualname__}" for cls in type(value).__mro__}


def picture_of(value: Any, label: str, budget: int) -> Picture | None:
    """``value`` as a picture within ``budget`` tokens, or None when it is not one.

    An object that describes itself to a model (``_repr_llm_``), or a formula that has a
    ``_repr_latex_`` beside its ``_repr_png_``, is not taken for a picture.
    """
    if isinstance(value, str | bytes | type) or callable(getattr(value, "_repr_llm_", None)):
        return None
    names = _names(value)
    if "matplotlib.axes._base._AxesBase" in names:
        value, names = value.figure, _names(value.figure)
    if "matplotlib.figure.Figure" in names or "matplotlib.figure.SubFigure" in names:
        return _figure(getattr(value, "figure", value), label, budget)
    if "PIL.Image.Image" in names:
        return _pil_picture(value, label, budget)
    if "IPython.core.display.Image" in names and getattr(value, "data", None) is None:
        raise ConfigError(
            f"{label} is a picture at a link, not in the notebook: load it with "
            "Image(filename=…), or Image(url=…, embed=True), to send it."
        )
    if callable(getattr(value, "_repr_latex_", None)):
        return None  # a formula (sympy) reads better as its text than as its rendering
    for method in ("_repr_png_", "_repr_jpeg_"):
        try:
            found = getattr(value, method, None)
            data = found() if callable(found) else None
        except Exception:
            continue  # its own picture failed: the text views still describe it
        if isinstance(data, tuple):  # (data, metadata)
            data = data[0] if data else None
        if isinstance(data, str):
            try:
                data = base64.b64decode(data, validate=True)
            except (binascii.Error, ValueError):
                continue
        if isinstance(data, bytes) and data:
            return from_bytes(data, label, budget)
    return None


def _figure(figure: Any, label: str, budget: int) -> Picture:
    width_in, height_in = figure.get_size_inches()
    dpi = float(figure.dpi)
    side = _fitting_side(round(width_in * dpi), round(height_in * dpi), budget)
    if side is None:
        raise _over_budget(label, budget)
    dpi = min(dpi, side / max(width_in, height_in))
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return from_bytes(buffer.getvalue(), label, budget)


def _pil_picture(image: Any, label: str, budget: int) -> Picture:
    side = _fitting_side(image.width, image.height, budget)
    if side is None:
        raise _over_budget(label, budget)
    return _encoded(_thumbnail(image, side), label)


def from_bytes(data: bytes, label: str, budget: int) -> Picture:
    """The picture in ``data`` (PNG, JPEG, GIF, WebP), scaled to fit: Pillow, when the notebook
    has loaded it, scales a picture that is too large; otherwise it goes as it is, if it fits."""
    found = size_of(data)
    if found is None:
        raise ConfigError(f"{label} is not a readable PNG, JPEG, GIF or WebP picture.")
    mime, width, height = found
    side = _fitting_side(width, height, budget)
    if side is None:
        raise _over_budget(label, budget)
    small = max(width, height) <= side and len(data) <= MAX_BYTES
    pil = sys.modules.get("PIL.Image")
    if small or pil is None:
        if len(data) > MAX_BYTES:
            raise ConfigError(
                f"{label} is {len(data) / 2**20:.1f} MB, {width}x{height}: over the "
                f"{MAX_BYTES >> 20} MB a picture may be. Make it smaller, or import PIL first "
                "(`from PIL import Image`) to have it scaled down."
            )
        if picture_tokens(width, height) > budget:
            raise ConfigError(
                f"{label} ({width}x{height}) costs ~{picture_tokens(width, height)} tokens, "
                f"over the budget of {budget}: import PIL first to have it scaled down."
            )
        return Picture(mime, data, label, width, height)
    try:
        image = pil.open(io.BytesIO(data))
        image.load()
    except Exception as error:
        raise ConfigError(f"{label} cannot be read as a picture ({error}).") from None
    return _encoded(_thumbnail(image, side), label, keep_jpeg=mime == "image/jpeg")


def _thumbnail(image: Any, side: int) -> Any:
    if max(image.width, image.height) <= side:
        return image
    image = image.copy()
    image.thumbnail((side, side))
    return image


def _encoded(image: Any, label: str, keep_jpeg: bool = False) -> Picture:
    """A PIL image as PNG (JPEG for a photo that was JPEG, or whose PNG is too large)."""
    if image.mode not in ("RGB", "RGBA", "L", "LA", "P"):
        image = image.convert("RGBA" if "A" in image.mode else "RGB")
    buffer = io.BytesIO()
    if not keep_jpeg:
        image.save(buffer, format="PNG", optimize=True)
    if keep_jpeg or buffer.tell() > MAX_BYTES:
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="JPEG", quality=85)
    data = buffer.getvalue()
    if len(data) > MAX_BYTES:
        raise ConfigError(f"{label} is still over {MAX_BYTES >> 20} MB scaled down: crop it.")
    mime = "image/jpeg" if data[:3] == b"\xff\xd8\xff" else "image/png"
    return Picture(mime, data, label, image.width, image.height)


def _over_budget(label: str, budget: int) -> ConfigError:
    least = picture_tokens(MIN_SIDE, MIN_SIDE)
    return ConfigError(
        f"{label} needs ~{least} tokens as a picture even at {MIN_SIDE} px, over the context "
        f"budget of {budget}: raise AmigoMagics.context_budget."
    )


# -- reading sizes ---------------------------------------------------------------------------


def size_of(data: bytes) -> tuple[str, int, int] | None:
    """``(mime, width, height)`` read from a PNG, JPEG, GIF or WebP header; None otherwise."""
    try:
        if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
            width, height = struct.unpack(">II", data[16:24])
            return _sized("image/png", width, height)
        if data[:6] in (b"GIF87a", b"GIF89a"):
            width, height = struct.unpack("<HH", data[6:10])
            return _sized("image/gif", width, height)
        if data[:3] == b"\xff\xd8\xff":
            return _jpeg_size(data)
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            return _webp_size(data)
    except struct.error:
        return None
    return None


def _sized(mime: str, width: int, height: int) -> tuple[str, int, int] | None:
    return (mime, width, height) if width > 0 and height > 0 else None


def _jpeg_size(data: bytes) -> tuple[str, int, int] | None:
    at = 2
    while at + 9 < len(data):
        if data[at] != 0xFF:
            return None
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            at += 2
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # a start of frame
            height, width = struct.unpack(">HH", data[at + 5 : at + 9])
            return _sized("image/jpeg", width, height)
        (length,) = struct.unpack(">H", data[at + 2 : at + 4])
        at += 2 + length
    return None


def _webp_size(data: bytes) -> tuple[str, int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8 ":
        width, height = struct.unpack("<HH", data[26:30])
        return _sized("image/webp", width & 0x3FFF, height & 0x3FFF)
    if chunk == b"VP8L":
        (bits,) = struct.unpack("<I", data[21:25])
        return _sized("image/webp", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
    if chunk == b"VP8X":
        width = 1 + int.from_bytes(data[24:27], "little")
        height = 1 + int.from_bytes(data[27:30], "little")
        return _sized("image/webp", width, height)
    return None


# -- an attached file ------------------------------------------------------------------------


def read_attachment(path: str, budget: int) -> Picture | str:
    """``--attach PATH``: a picture (by its bytes, not its name), else the file's text."""
    file = Path(path).expanduser()
    where = f"--attach {path}"
    try:
        size = file.stat().st_size
        if file.is_dir():
            raise ConfigError(f"{where} is a folder: attach a file.")
        if not file.is_file():  # a device or a pipe (/dev/zero, a FIFO) would be read forever
            raise ConfigError(f"{where} is not a regular file (a device or a pipe): attach a file.")
        if size > READ_LIMIT:
            raise ConfigError(
                f"{where} is {size / 2**20:,.0f} MB: attach a file under {READ_LIMIT >> 20} MB."
            )
        data = file.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"{where}: no such file (relative paths start at {Path.cwd()})."
        ) from None
    except OSError as error:
        raise ConfigError(f"{where}: cannot read it ({error.strerror or error}).") from None
    if size_of(data) is not None:
        return from_bytes(data, file.name, budget)
    if data[:4] == b"RIFF" or b"\x00" in data[:8192]:
        raise ConfigError(
            f"{where} is neither a picture (PNG, JPEG, GIF, WebP) nor text: attach one of those."
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigError(f"{where} is not UTF-8 text: save it as UTF-8, then attach it.") from None
