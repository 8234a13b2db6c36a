"""A chat's turns as a JSON or Markdown file, and JSON back to turns (pictures included);
writing them, with one readable line for a path that cannot be written."""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .history import StoredImage, Turn

__all__ = [
    "FORMAT_VERSION",
    "to_json",
    "to_markdown",
    "turns_from_json",
    "unique_path",
    "write_chat",
]

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
        lines += _tool_lines(turn.meta.get("tools") if isinstance(turn.meta, dict) else None)
        for index, image in enumerate(turn.images, 1):
            name = f"turn{number}-{index}.{_EXTENSIONS.get(image.mime, 'bin')}"
            files[folder / name] = image.data
            alt = image.alt.replace("]", ")").replace("[", "(").replace("\n", " ")
            lines += [f"![{alt}]({folder.name}/{name})", ""]
    files[path] = "\n".join(lines).encode()
    return files


def _tool_lines(calls: Any) -> list[str]:
    """An answer's tool calls (``-T``), one line each: the call, how it ended, its result."""
    lines = []
    for call in calls if isinstance(calls, list) else ():
        if isinstance(call, dict):
            result = " ".join(str(call.get("result", "")).split())
            result = result if len(result) <= 200 else result[:199] + "…"
            label = f"{call.get('name', '?')}({call.get('arguments', '')})"
            lines.append(f"- tool call `{label}` → {call.get('status', '?')}: {result}")
    return [*lines, ""] if lines else []


def write_chat(
    turns: Sequence[Turn], path: Path, *, fmt: str, notebook: str, chat: str, force: bool
) -> None:
    """Write ``turns`` to ``path`` as ``fmt`` (``json`` or ``md``); refuse to overwrite unless
    ``force``; a path that cannot be written is one line saying which and why."""
    if fmt == "json":
        files = {path: to_json(turns, notebook=notebook, chat=chat).encode()}
    else:
        files = to_markdown(turns, chat=chat, path=path)
    try:
        for target in files:
            if target.is_dir():
                raise ConfigError(
                    f"{target} is a folder: give a file name, e.g. {target / 'chat.md'}"
                )
        existing = [str(p) for p in files if p.exists()]
        if existing and not force:
            raise ConfigError(f"{existing[0]} already exists; add --force to overwrite it.")
        for target, data in files.items():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
    except OSError as error:
        where = error.filename or path
        reason = error.strerror or type(error).__name__
        if isinstance(error, FileExistsError | NotADirectoryError):
            reason = "a file is in the way of a folder on that path"
        raise ConfigError(
            f"Cannot export to {where}: {reason}. Pick a path in a folder you can write to."
        ) from None


def unique_path(folder: Path, chat: str, fmt: str) -> Path:
    """``<folder>/<chat>-<timestamp>.<fmt>``, the chat name made safe, never an existing file."""
    stem = re.sub(r"[^\w.-]+", "_", chat).strip("._") or "chat"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = folder / f"{stem}-{stamp}.{fmt}"
    number = 2
    while path.exists():
        path = folder / f"{stem}-{stamp}-{number}.{fmt}"
        number += 1
    return path
