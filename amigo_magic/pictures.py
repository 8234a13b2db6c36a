"""Fetching generated pictures to bytes: the one adapter that downloads an image reply's links.

Only ``http(s)`` links are fetched, never through a redirect (one could point at a local file,
cloud metadata or the user's own services), at most :data:`IMAGE_LIMIT` bytes, and the bytes
must sniff as PNG, JPEG, GIF or WebP whatever the server declares. Base64 pictures are decoded
and sniffed the same way. One :class:`~amigo_magic.client.HTTPClient` per settings, owned here
until :meth:`PictureFetcher.aclose`.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from urllib.parse import urlsplit

from .client import HTTPClient
from .config import Settings
from .errors import InvalidResponseError
from .history import StoredImage
from .protocol import Image

__all__ = ["IMAGE_LIMIT", "MAX_PICTURES", "PictureFetcher", "sniff"]

IMAGE_LIMIT = 20 * 2**20  # bytes of one picture
MAX_PICTURES = 10  # pictures fetched from one reply; the rest are counted, not fetched
_IMAGE_MAGIC = {
    b"\x89PNG\r\n\x1a\n": "image/png",
    b"\xff\xd8\xff": "image/jpeg",
    b"GIF87a": "image/gif",
    b"GIF89a": "image/gif",
    b"RIFF": "image/webp",
}


class PictureFetcher:
    """Turns the pictures of an image reply into :class:`StoredImage` bytes."""

    def __init__(self) -> None:
        self._clients: dict[Settings, HTTPClient] = {}

    async def fetch(self, image: Image, alt: str, settings: Settings) -> StoredImage:
        if image.b64_json:
            try:
                data = base64.b64decode(image.b64_json, validate=True)
            except (binascii.Error, ValueError):
                raise InvalidResponseError("The picture's base64 data is corrupt.") from None
            return StoredImage(sniff(data, "the base64 picture"), data, alt)
        url = image.url or ""
        if not url.lower().startswith(("http://", "https://")):
            raise InvalidResponseError(
                f"Refused to fetch the picture from '{url[:80]}': only http(s) URLs are fetched. "
                "Run the cell again, or pick another image model."
            )
        client = self._clients.get(settings)
        if client is None:
            client = self._clients[settings] = HTTPClient(settings, service="the image host")
        response = await client.get(url, limit=IMAGE_LIMIT, timeout=settings.timeouts.image)
        status = response.status_code
        if 300 <= status < 400:
            raise InvalidResponseError(
                _redirect_refusal(url, status, response.headers.get("location", ""))
            )
        if status != 200:
            raise InvalidResponseError(
                f"Could not download the picture ({status} from {_host(url)}). "
                "Image links expire quickly: run the cell again."
            )
        data = response.content
        if len(data) > IMAGE_LIMIT:
            raise InvalidResponseError(
                f"The picture at {_host(url)} is larger than {IMAGE_LIMIT >> 20} MB; not shown. "
                "Run the cell again, or pick another image model."
            )
        declared = response.headers.get("content-type", "").split(";")[0].strip()
        if not declared.startswith("image/"):
            raise InvalidResponseError(
                f"The picture link at {_host(url)} returned '{declared or 'no type'}', not an "
                "image; not shown. Image links expire quickly: run the cell again."
            )
        return StoredImage(sniff(data, f"the picture at {_host(url)}"), data, alt)

    async def aclose(self) -> None:
        clients, self._clients = self._clients, {}
        for client in clients.values():
            await client.aclose()


def _redirect_refusal(url: str, status: int, target: str) -> str:
    # Never followed: a redirect could point at a local file or a private address (cloud
    # metadata, the user's own services) that the image server should not reach.
    name = (urlsplit(target).hostname or "").lower()
    try:
        private = not ipaddress.ip_address(name).is_global
    except ValueError:
        private = name == "localhost" or name.endswith(".localhost")
    if not target.lower().startswith(("http://", "https://")):
        what = ", not a web address"
    elif private:
        what = ", a private address"
    else:
        what = ""
    return (
        f"Refused the picture at {_host(url)}: it redirects ({status}) to '{target[:80]}'{what}, "
        "and picture redirects are not followed. Run the cell again, or pick another image model."
    )


def sniff(data: bytes, what: str) -> str:
    """The MIME type ``data`` really is, or :class:`InvalidResponseError` naming ``what``."""
    for magic, mime in _IMAGE_MAGIC.items():
        if data.startswith(magic):
            return mime
    raise InvalidResponseError(f"{what[:1].upper()}{what[1:]} is not a PNG, JPEG, GIF or WebP.")


def _host(url: str) -> str:
    return url.split("/")[2] if url.count("/") >= 2 else url
