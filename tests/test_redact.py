"""The scrubber: a key goes, in every form a server echoes it, and nothing else is touched."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amigo_magic.redact import MASK, scrub

KEY = "sk-Ab+cd/ef=gh+ij/kl==mn&op?q#r%s t:u@v"


def _lower_hex(text: str) -> str:
    return re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), text)


ECHOES: dict[str, Callable[[str], str]] = {
    "raw": lambda k: k,
    "url": lambda k: quote(k, safe=""),
    "url lower hex": lambda k: _lower_hex(quote(k, safe="")),
    "url keeping /": lambda k: quote(k),
    "form (+ for space)": lambda k: quote_plus(k, safe=""),
    "form lower hex": lambda k: _lower_hex(quote_plus(k, safe="")),
    "encodeURIComponent": lambda k: quote(k, safe="!'()*~"),
    "encodeURI": lambda k: quote(k, safe=";,/?:@&=+$#!'()*~"),
    "json": lambda k: json.dumps(k)[1:-1],
    "json with \\/": lambda k: json.dumps(k)[1:-1].replace("/", "\\/"),
    "python repr": lambda k: repr(k)[1:-1],
    "bytes repr": lambda k: repr(k.encode())[2:-1],
    "basic user:key": lambda k: base64.b64encode(f"alice:{k}".encode()).decode(),
    "basic key as user": lambda k: base64.b64encode(f"{k}:".encode()).decode(),
    "basic key alone": lambda k: base64.b64encode(k.encode()).decode(),
    "basic url-safe": lambda k: base64.urlsafe_b64encode(f"bob:{k}".encode()).decode(),
}


@pytest.mark.parametrize("form", list(ECHOES))
def test_every_echo_form_is_removed(form: str) -> None:
    echoed = ECHOES[form](KEY)
    text = f'{{"error": "Authorization: Bearer {echoed} is not valid", "x": 1}}'
    cleaned = scrub(text, [KEY])
    assert echoed not in cleaned
    assert KEY not in cleaned
    assert MASK in cleaned
    assert cleaned.startswith('{"error": "Authorization: ')  # the rest of the words stay


def test_a_key_with_a_carriage_return_shown_as_an_escape_is_removed() -> None:
    key = "sk-crlf-7d1e2f3a4b5c\r"
    message = f"Illegal header value {('Bearer ' + key).encode()!r}"  # httpx's own words
    assert "\\r" in message
    cleaned = scrub(message, [key])
    assert "sk-crlf-7d1e2f3a4b5c" not in cleaned
    assert cleaned == "Illegal header value b'Bearer ***'"


def test_nothing_else_is_touched() -> None:
    text = "401 Unauthorized: check the key (%2B and + are fine)"
    assert scrub(text, [KEY, "", "sk-other-key-1234"]) == text
    assert scrub(text, []) == text


# Keys with every URL-special character (not "*": the mask itself).
_KEY_CHARS = st.sampled_from(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/=-_.~!'()&?#%:@;,$[] "
)
_TEXT = st.text(st.sampled_from("abc XYZ{}\":,.-_%+=/'\n"), max_size=40)


@settings(max_examples=1000, deadline=None)
@given(
    key=st.text(_KEY_CHARS, min_size=8, max_size=64).filter(lambda k: k.strip() == k),
    form=st.sampled_from(sorted(ECHOES)),
    user=st.text(st.sampled_from("abcdefgh0123_."), max_size=9),
    before=_TEXT,
    after=_TEXT,
)
def test_property_the_scrubber_removes_a_generated_key_from_any_echo_form(
    key: str, form: str, user: str, before: str, after: str
) -> None:
    echo = ECHOES[form]
    echoed = echo(key) if not form.startswith("basic user") else _basic(user, key)
    cleaned = scrub(f"{before}{echoed}{after}", [key])
    assert echoed not in cleaned
    assert key not in cleaned
    assert quote(key, safe="") not in cleaned


def _basic(user: str, key: str) -> str:
    return base64.b64encode(f"{user}:{key}".encode()).decode()
