"""What an answer counts toward usage and the budget, one layer at a time: a picture part's
estimate, the requests of one answer summed, a request that got no answer counting nothing."""

from __future__ import annotations

import base64
import io

from PIL import Image

from amigo_magic.answer import Answer
from amigo_magic.attach import MAX_SIDE, picture_tokens
from amigo_magic.batch_item import Outcome
from amigo_magic.errors import AuthenticationError, StreamError
from amigo_magic.protocol import Usage
from amigo_magic.usage import estimate_prompt_tokens


def picture_message(data: bytes, mime: str) -> dict[str, object]:
    url = f"data:{mime};base64,{base64.b64encode(data).decode()}"
    parts = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": url}},
    ]
    return {"role": "user", "content": parts}


def encoded(size: tuple[int, int], fmt: str) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(out, fmt)
    return out.getvalue()


def test_a_picture_part_counts_its_picture_tokens() -> None:
    for fmt, mime in (("PNG", "image/png"), ("JPEG", "image/jpeg")):
        message = picture_message(encoded((1600, 400), fmt), mime)
        # 4 for the message, 4 for "What is this?", the picture's tiles at its size
        assert estimate_prompt_tokens([message]) == 4 + 4 + picture_tokens(1600, 400)


def test_a_picture_at_a_link_or_unreadable_counts_as_one_sent_at_full_size() -> None:
    link = {"type": "image_url", "image_url": {"url": "https://example.invalid/a.png"}}
    junk = picture_message(b"not a picture", "image/png")
    expected = 4 + picture_tokens(MAX_SIDE, MAX_SIDE)
    assert estimate_prompt_tokens([{"role": "user", "content": [link]}]) == expected
    assert estimate_prompt_tokens([junk]) == expected + 4  # its text part too


def test_each_request_of_an_answer_adds_up() -> None:
    answer = Answer(model="m", chat="default")
    answer.prompt_estimate = 50
    answer.add_text("x" * 40)  # the server reports nothing: ~10 tokens
    answer.another_request(80)  # a repair: the next request's messages, estimated
    answer.restart("repaired once")
    answer.add_text("y" * 20)
    answer.set_usage(Usage(90, 6))
    assert answer.requests == 2
    assert answer.token_counts() == (50 + 90, 10 + 6, True)  # the first round was estimated
    assert answer.tokens == 16


def test_a_request_that_got_no_answer_counts_nothing() -> None:
    answer = Answer(model="m", chat="default")
    answer.prompt_estimate = 50
    answer.fail(AuthenticationError("refused", status=401))
    assert answer.unanswered
    assert answer.token_counts() == (None, None, False)
    assert answer.turn(None).prompt_tokens is None


def test_a_request_that_failed_after_some_text_counts_it() -> None:
    answer = Answer(model="m", chat="default")
    answer.prompt_estimate = 50
    answer.add_text("x" * 8)
    answer.fail(StreamError("the connection dropped"))
    assert not answer.unanswered
    assert answer.token_counts() == (50, 2, True)


def test_a_map_item_answered_only_if_the_server_said_something() -> None:
    refused = AuthenticationError("refused", status=401)
    assert not Outcome("", error=refused).answered
    assert Outcome("", usage=Usage(5, 0), error=refused).answered  # usage: it was processed
    assert Outcome("half", error=StreamError("cut"), pieces=1).answered
    assert Outcome("ok").answered
