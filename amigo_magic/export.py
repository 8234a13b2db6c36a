"""A chat's turns as a JSON or Markdown file, and JSON back to turns (pictures included)."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from .errors import ConfigError
from .history import StoredImage, Turn

__all__ = ["FORMAT_VERSION", "to_json", "to_markdown", "turns_from_json"]

FORMAT_VERSION = 1
_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/gif": "gif", "image/webp": "webp"}


def to_json(turns: Sequence[Turn], *, notebook: str, chat: str) -> str:
    """Every field of every turn; pictures as base64."""
    records = []
    for turn in turns:
        record = asdict(turn)
        record["images"] = [
            {"mime": i.mime, "alt": i.alt, "data": base64.b64encode(i.data).decode()}
            for i in turn.images
        ]
        records.append(record)
    document = {
        "amigo_magic_export": FORMAT_VERSION,
        "notebook": notebook,
        "chat": chat,
        "exported": time.time(),
        "turns": records,
    }
    return json.dumps(document, ensure_ascii=False, indent=1)


def turns_from_json(text: str) -> list[Turn]:
    """The turns of a file written by :func:`to_json`."""
    try:
        document = json.loads(text)
        if document.get("amigo_magic_export") != FORMAT_VERSION:
            raise ValueError("not an amigo_magic export")
        turns = []
        for record in document["turns"]:
            images = tuple(
                StoredImage(i["mime"], base64.b64decode(i["data"]), i["alt"])
                for i in record.pop("images")
            )
            turns.append(Turn(**record, images=images))
        return turns
    except (ValueError, KeyError, TypeError) as error:
        raise ConfigError(f"Not an amigo_magic JSON export: {error}") from None


def to_markdown(turns: Sequence[Turn], *, chat: str, path: Path) -> dict[Path, bytes]:
    """The transcript at ``path``, its pictures in a ``<stem>_files`` folder beside it.

    Returns every file to write (path → bytes); the caller writes them.
    """
    files: dict[Path, bytes] = {}
    folder = path.with_name(f"{path.stem}_files")
    lines = [f"# Chat '{chat}'", ""]
    for number, turn in enumerate(turns, 1):
        who = "You" if turn.role == "user" else turn.model or "assistant"
        flag = "" if turn.status == "complete" else f" ({turn.status})"
        lines += [f"## {who}{flag}", "", turn.content, ""]
        for index, image in enumerate(turn.images, 1):
            name = f"turn{number}-{index}.{_EXTENSIONS.get(image.mime, 'bin')}"
            files[folder / name] = image.data
            alt = image.alt.replace("]", ")").replace("[", "(").replace("\n", " ")
            lines += [f"![{alt}]({folder.name}/{name})", ""]
    files[path] = "\n".join(lines).encode()
    return files
