"""The one scrubber: take every secret the session knows out of a text, in every form a server
really echoes it.

A server that repeats a request back (an error page quoting the ``Authorization`` header, a
``/models`` list built from the query string, a JSON error with the header inside) does not
always repeat it byte for byte: it may URL-encode it (``%2B`` or ``+`` for a space, upper or lower
hex), JSON-escape it (``\\/``, ``\\u00..``), show it as a Python repr (a ``\\r`` written as two
characters), or send it back as the base64 of ``user:password`` of a ``Basic`` header. Each form
of each secret is removed, longest first, so no encoded copy survives in part.

Pure: strings in, strings out; the caller passes the secrets it knows.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable
from functools import lru_cache
from urllib.parse import quote, quote_plus

__all__ = ["MASK", "echo_forms", "scrub"]

MASK = "***"
_MIN_DERIVED = 6  # shorter fragments (base64 cores) would mask ordinary words
_HEX = re.compile(r"%[0-9A-F]{2}")


def scrub(text: str, secrets: Iterable[str], *, mask: str = MASK) -> str:
    """``text`` with every echo form of every non-empty secret replaced by ``mask``."""
    forms: set[str] = set()
    for secret in secrets:
        if secret:
            forms.update(echo_forms(secret))
    if not forms or not text:
        return text
    for form in sorted(forms, key=len, reverse=True):
        if form in text:
            text = text.replace(form, mask)
    return text


@lru_cache(maxsize=64)
def echo_forms(secret: str) -> frozenset[str]:
    """Every way ``secret`` comes back in a server's words (see the module docstring)."""
    forms = {secret, secret.strip()}
    # Python's quote (with and without "/"), encodeURIComponent, encodeURI, form encoding.
    for safe in ("", "/", "/:", "!'()*~", ";,/?:@&=+$#!'()*~"):
        for encoded in (quote(secret, safe=safe), quote_plus(secret, safe=safe)):
            forms.add(encoded)
            forms.add(_HEX.sub(lambda m: m.group(0).lower(), encoded))
    for ensure_ascii in (True, False):
        escaped = json.dumps(secret, ensure_ascii=ensure_ascii)[1:-1]
        forms.add(escaped)
        forms.add(escaped.replace("/", "\\/"))  # PHP and some Java encoders escape the slash
    forms.add(repr(secret)[1:-1])
    forms.add(repr(secret.encode("utf-8", "surrogatepass"))[2:-1])
    forms.update(_base64_forms(secret.encode("utf-8", "surrogatepass")))
    return frozenset(f for f in forms if f)


def _base64_forms(raw: bytes) -> set[str]:
    """The base64 of ``raw`` alone, as ``user:raw`` / ``raw:`` (Basic), and at each of the three
    alignments inside a longer value — the part of the encoding that only ``raw`` decides."""
    forms = set()
    for whole in (raw, raw + b":", b":" + raw):
        forms.add(base64.b64encode(whole).decode())
        forms.add(base64.urlsafe_b64encode(whole).decode())
    for offset in range(3):
        lead = (3 - offset) % 3  # bytes of raw that share a group with whatever precedes it
        body = raw[lead:]
        body = body[: len(body) - len(body) % 3]  # whole groups only: the rest mixes with after
        if len(body) * 4 // 3 < _MIN_DERIVED:
            continue
        core = binascii.b2a_base64(body, newline=False).decode()
        forms.add(core)
        forms.add(core.replace("+", "-").replace("/", "_"))
    return forms
