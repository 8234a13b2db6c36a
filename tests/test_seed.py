"""The seed's own example, with only its imports changed, runs as a script against our server."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.amigo_server import AmigoServer, Reply

SEED = Path(__file__).resolve().parents[2] / "shared" / "seed" / "000_6990b48d14519d7d.txt"


def seed_example() -> str:
    """The python block of the seed, imports pointed at amigo_magic."""
    text = SEED.read_text(encoding="utf-8")
    (code,) = re.findall(r"```python\n(.*?)(?:```|\Z)", text, flags=re.S)
    code = code.replace(
        "from src.endpoints.gpt4free.g4f.Provider.not_working import AmigoChat",
        "from amigo_magic import AmigoChat",
    ).replace("from src.typing import Message", "from amigo_magic import Message")
    assert "from src" not in code
    return code


def test_seed_example_streams_against_the_loopback_server(
    server: AmigoServer, tmp_path: Path
) -> None:
    script = tmp_path / "seed_example.py"
    script.write_text(seed_example(), encoding="utf-8")
    server.enqueue(Reply.stream("Весна пришла, ручьи звенят.", delay=0.01))
    env = {**os.environ, "AMIGO_BASE_URL": server.base_url}
    done = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "Весна пришла, ручьи звенят."
    (request,) = server.requests
    assert request.json["messages"] == [{"role": "user", "content": "Напиши короткий стих о весне"}]
    assert request.json["model"] == "gpt-4o-mini"
    assert request.json["personaId"] == "amigo"


def test_seed_example_with_an_image_model(server: AmigoServer, tmp_path: Path) -> None:
    script = tmp_path / "seed_image.py"
    script.write_text(seed_example().replace('"gpt-4o-mini"', '"flux"'), encoding="utf-8")
    env = {**os.environ, "AMIGO_BASE_URL": server.base_url}
    done = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    (url,) = re.findall(r"!\[Напиши короткий стих о весне\]\((http://[^)]+)\)", done.stdout)
    assert url.startswith(server.origin)


def test_provider_face() -> None:
    from amigo_magic import AmigoChat

    assert AmigoChat.default_model == "gpt-4o-mini"
    assert len(AmigoChat.chat_models) == 29
    assert len(AmigoChat.image_models) == 8
    assert AmigoChat.models == AmigoChat.chat_models + AmigoChat.image_models
    assert AmigoChat.model_aliases["claude-3.5-sonnet"] == "claude-3-5-sonnet-20241022"
    assert AmigoChat.get_model("claude") == "claude-3-5-sonnet-20241022"
    assert AmigoChat.get_personaId("gpt-4o") == "summarizer"
    assert AmigoChat.supports_stream
    assert AmigoChat.supports_message_history
    assert re.fullmatch(
        r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}",
        AmigoChat.generate_chat_id(),
    )
    with pytest.raises(ValueError, match="Unknown model 'no-such-model'"):
        AmigoChat.get_personaId("no-such-model")
