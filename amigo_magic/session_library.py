"""The session's library: a notebook's chats, their history and exports, and the model lists —
everything around a request rather than the request itself. :class:`~.session.ChatSession`
inherits it; the front ends call it there."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .answer import ModelSource
from .config import Endpoint, Settings
from .errors import ConfigError
from .history import ChatSummary, HistoryStore, Turn
from .routing import Target

if TYPE_CHECKING:
    from .backends import Backend
    from .runner import Runner

__all__ = ["ExportReport", "Library"]


@dataclass(frozen=True, slots=True)
class ExportReport:
    """What an export wrote."""

    path: Path
    chat: str
    turns: int
    pictures: int


class Library:
    """The chats, history, exports and model lists of one notebook's session."""

    store: HistoryStore
    notebook: str
    _runner: Runner
    _env: Mapping[str, str]

    # what ChatSession provides
    def settings(self) -> Settings:  # pragma: no cover
        raise NotImplementedError

    def _backend(self, target: Target, settings: Settings) -> Backend:  # pragma: no cover
        raise NotImplementedError

    # -- endpoints that last (saved_endpoints: name, URL, key variable; never a key) ----------

    def save_endpoint(self, name: str, spec: Mapping[str, str]) -> Path:
        """Keep endpoint ``name`` for later kernels; the file it is kept in."""
        from . import saved_endpoints

        return saved_endpoints.save(self._env, name, spec)

    def forget_endpoint(self, name: str) -> bool:
        """Forget a saved endpoint; False if none was saved by that name."""
        from . import saved_endpoints

        return saved_endpoints.forget(self._env, name)

    # -- chats, history, exports ---------------------------------------------------------------

    def history(self, chat: str = "default", limit: int | None = None) -> list[Turn]:
        """The chat's turns, oldest first (the newest ``limit`` of them)."""
        return self.store.load(self.notebook, chat, limit=limit)

    def chats(self) -> list[ChatSummary]:
        """This notebook's chats, most recent first."""
        return self.store.chats(self.notebook)

    def turn_count(self, chat: str) -> int:
        return next((c.turns for c in self.chats() if c.name == chat), 0)

    def reset(self, chat: str | None = "default") -> int:
        """Forget ``chat`` (every chat of the notebook when None); the number of turns removed."""
        return self.store.reset(self.notebook, chat)

    def attach(self, name: str) -> list[ChatSummary]:
        """Keep this notebook's history under ``name`` from now on (a renamed notebook)."""
        self.notebook = name
        return self.chats()

    def export(
        self,
        path: str | Path,
        *,
        chat: str = "default",
        fmt: str | None = None,
        force: bool = False,
        unique: bool = False,
    ) -> ExportReport:
        """Write ``chat`` to ``path`` (``.json``: JSON, else Markdown with picture files).

        With ``unique`` ``path`` is a folder and the file is ``<chat>-<time>.<fmt>`` in it."""
        from .export import unique_path, write_chat

        turns = self.history(chat)
        if not turns:
            raise ConfigError(f"Chat '{chat}' is empty: nothing to export.")
        target = Path(path).expanduser()
        fmt = fmt or ("json" if target.suffix.lower() == ".json" else "md")
        if unique:
            target = unique_path(target, chat, fmt)
        write_chat(turns, target, fmt=fmt, notebook=self.notebook, chat=chat, force=force)
        pictures = sum(len(turn.images) for turn in turns)
        return ExportReport(target, chat, len(turns), pictures)

    # -- model lists -----------------------------------------------------------------------------

    def list_models(self, settings: Settings | None = None) -> list[ModelSource]:
        """The local model and every endpoint's live models, fetched at once; a server that is
        down is listed with its error, without holding up the rest."""
        return self._runner.call(self.gather_models(settings or self.settings()))

    def list_models_later(
        self,
        settings: Settings,
        done: Callable[[list[ModelSource]], None],
        on_error: Callable[[BaseException], None],
    ) -> None:
        """:meth:`list_models` on the loop; ``done`` gets the list (the panel never waits)."""

        async def deliver() -> None:
            done(await self.gather_models(settings))

        self._runner.submit(deliver(), on_error=on_error)

    async def gather_models(self, settings: Settings) -> list[ModelSource]:
        """:meth:`list_models` as a coroutine on the loop."""
        from .backends.listing import gather_models
        from .backends.openai import OpenAIBackend

        def backend_for(endpoint: Endpoint) -> OpenAIBackend:
            backend = self._backend(Target("openai", "", endpoint.name, "any", endpoint), settings)
            assert isinstance(backend, OpenAIBackend)
            return backend

        return await gather_models(settings, backend_for)
