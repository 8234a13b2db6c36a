"""The service layer both front ends call: resolve the model, build the messages from history,
run the request on the loop thread, keep the live answer, record the turn however it ends.

An :class:`Answer` is written by the loop thread and read by a front end: the magic waits on it
in the kernel's main thread, the panel from widget callbacks. Appending a text piece is all the
per-token work; rendering is the front end's, throttled.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import concurrent.futures
import dataclasses
import ipaddress
import logging
import threading
import time
from collections.abc import Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .backends.base import Backend, ChatRequest, ImageRequest
from .client import HTTPClient
from .config import Settings
from .errors import AmigoError, ConfigError, InvalidResponseError
from .history import HistoryStore, Status, StoredImage, Turn, window
from .protocol import ChatParams, Finish, Image, Progress, StreamWarning, TextDelta, Usage
from .render import AnswerState
from .routing import Target, resolve_target
from .runner import Runner

__all__ = ["Answer", "AskOptions", "ChatSession", "ImageAnswer", "ModelSource"]

log = logging.getLogger("amigo_magic.session")

IMAGE_LIMIT = 20 * 2**20  # bytes of one picture
MAX_PICTURES = 10  # pictures fetched from one image reply; the rest are counted, not fetched
PACK = 512  # streamed pieces joined into one string at a time
_IMAGE_MAGIC = {
    b"\x89PNG\r\n\x1a\n": "image/png",
    b"\xff\xd8\xff": "image/jpeg",
    b"GIF87a": "image/gif",
    b"GIF89a": "image/gif",
    b"RIFF": "image/webp",
}


@dataclass(frozen=True, slots=True)
class AskOptions:
    """How to ask: which chat and model, what to send along."""

    chat: str = "default"
    model: str | None = None
    system: str | None = None
    params: ChatParams = field(default_factory=ChatParams)
    use_history: bool = True
    max_history: int = 20
    cell_id: str | None = None


class Answer:
    """One answer as it arrives. The loop thread writes; any thread may read and :meth:`stop`."""

    def __init__(self, *, model: str, chat: str) -> None:
        self.model = model
        self.chat = chat
        self.parts: list[str] = []
        self.packed = 0  # parts[:packed] are blocks of PACK pieces joined
        self.length = 0  # characters so far
        self.phase: str = "thinking"
        self.started = time.monotonic()
        self.finished: float | None = None
        self.usage: Usage | None = None
        self.finish_reason: str | None = None
        self.chunks = 0
        self.error: BaseException | None = None
        self.warnings: list[str] = []
        self.changed = threading.Event()  # set on every piece; readers clear it
        self.done = threading.Event()
        self.future: concurrent.futures.Future[None] | None = None

    @property
    def text(self) -> str:
        return "".join(self.parts)

    @property
    def seconds(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    @property
    def tokens(self) -> int:
        """Completion tokens as the server counted them, else the pieces received."""
        if self.usage is not None and self.usage.completion_tokens is not None:
            return self.usage.completion_tokens
        return self.chunks

    @property
    def status(self) -> Status:
        return {"stopped": "stopped", "error": "error"}.get(self.phase, "complete")  # type: ignore[return-value]

    def stop(self) -> None:
        """Cancel the request; the text so far stays, marked stopped."""
        if self.future is not None:
            self.future.cancel()

    def wait(self, timeout: float | None = None) -> bool:
        return self.done.wait(timeout)

    def snapshot(self) -> AnswerState:
        """The answer as the renderer needs it, at this moment."""
        error = self.error
        return AnswerState(
            text=self.text,
            model=self.model,
            chat=self.chat,
            phase=self.phase,  # type: ignore[arg-type]
            seconds=self.seconds,
            tokens=self.tokens if self.chunks else None,
            error=str(error) if isinstance(error, AmigoError) else _bug_line(error),
            warning="; ".join(self.warnings) or None,
        )


class ImageAnswer:
    """The pictures of one image request, fetched to bytes."""

    def __init__(self, *, model: str, chat: str, prompt: str) -> None:
        self.model = model
        self.chat = chat
        self.prompt = prompt
        self.images: list[StoredImage] = []
        self.skipped = 0  # pictures of the reply beyond MAX_PICTURES, not fetched
        self.started = time.monotonic()
        self.error: BaseException | None = None
        self.done = threading.Event()
        self.future: concurrent.futures.Future[None] | None = None

    def stop(self) -> None:
        if self.future is not None:
            self.future.cancel()


@dataclass(frozen=True, slots=True)
class ModelSource:
    """Models a backend offers right now: an endpoint's live list, or the local model."""

    name: str
    where: str
    models: tuple[str, ...] = ()
    error: str | None = None


class ChatSession:
    """One notebook's conversations, on one store, through pooled backends."""

    def __init__(
        self,
        *,
        store: HistoryStore,
        notebook: str,
        runner: Runner,
        backend_factory: Callable[[Target, Settings], Backend] | None = None,
    ) -> None:
        self.store = store
        self.notebook = notebook
        self._runner = runner
        self._factory = backend_factory or _make_backend
        self._backends: dict[object, Backend] = {}
        self._downloads: dict[Settings, HTTPClient] = {}
        self._asked: dict[object, tuple[str, Turn]] = {}  # live answer → (notebook, its prompt)
        runner.on_close(self.aclose)

    # -- chat ----------------------------------------------------------------------------------

    def ask(self, prompt: str, options: AskOptions, settings: Settings) -> Answer:
        """Send ``prompt`` and return its live :class:`Answer` at once.

        Raises at once (before any request) for an unknown model or an image model.
        """
        target = resolve_target(options.model, settings)
        if target.kind == "image":
            raise ConfigError(
                f"'{target.label}' is an image model: use %amigo_image for pictures, or pick a "
                "chat model (`%amigo models` lists them)."
            )
        window_size = options.max_history * 2 + 2  # room for exchanges window() leaves out
        notebook = self.notebook
        asked = Turn(
            "user",
            prompt,
            model=target.label,
            cell_id=options.cell_id,
            no_history=not options.use_history,  # sent alone, and never resent as context
        )
        if options.cell_id:  # a re-run cell: its earlier exchange must not be sent as context
            unsaved = self.store.add(notebook, options.chat, asked, replace_cell=True)
            earlier = self.store.load(notebook, options.chat, limit=window_size)
            earlier = [turn for turn in earlier if turn.uid != asked.uid]
        else:
            earlier = self.store.load(notebook, options.chat, limit=window_size)
            unsaved = self.store.add(notebook, options.chat, asked)
        messages: list[dict[str, str]] = []
        if options.system:
            messages.append({"role": "system", "content": options.system})
        if options.use_history:
            messages += window(earlier, options.max_history)
        messages.append({"role": "user", "content": prompt})
        answer = Answer(model=target.label, chat=options.chat)
        if unsaved:
            answer.warnings.append(unsaved)
        self._asked[answer] = (notebook, asked)
        request = ChatRequest(target.model, messages, options.params)
        answer.future = self._runner.submit(
            self._stream(answer, request, target, settings, options.cell_id)
        )
        return answer

    async def _stream(
        self,
        answer: Answer,
        request: ChatRequest,
        target: Target,
        settings: Settings,
        cell_id: str | None,
    ) -> None:
        try:
            backend = self._backend(target, settings)
            async with aclosing(backend.chat(request)) as events:
                async for event in events:
                    kind = type(event)
                    if kind is TextDelta:
                        parts = answer.parts
                        parts.append(event.text)  # type: ignore[union-attr]
                        answer.length += len(event.text)  # type: ignore[union-attr]
                        answer.chunks += 1
                        if len(parts) - answer.packed >= PACK:
                            # A few characters per piece cost ~14x their size as separate
                            # strings; one slice assignment packs the newest PACK into one,
                            # atomically for a reader's "".join.
                            parts[answer.packed :] = ["".join(parts[answer.packed :])]
                            answer.packed += 1
                        if answer.chunks == 1:
                            answer.phase = "streaming"
                        answer.changed.set()
                    elif kind is Usage:
                        answer.usage = event  # type: ignore[assignment]
                    elif kind is Finish:
                        answer.finish_reason = event.reason  # type: ignore[union-attr]
                    elif kind is StreamWarning:
                        answer.warnings.append(event.message)  # type: ignore[union-attr]
                    elif kind is Progress and answer.chunks == 0:
                        answer.phase = event.phase  # type: ignore[union-attr]
                        answer.changed.set()
            if answer.finish_reason == "length":
                answer.warnings.append("cut at the token limit: raise --max-tokens for more")
            answer.phase = "done"
        except asyncio.CancelledError:
            answer.phase = "stopped"
            raise
        except BaseException as error:
            answer.error = error
            answer.phase = "error"
            if not isinstance(error, Exception):
                raise
        finally:
            answer.finished = time.monotonic()
            # One string from now on: every later ``.text`` returns this object, not a copy.
            answer.parts[:] = ["".join(answer.parts)] if answer.parts else []
            self._record_answer(answer, cell_id)
            answer.done.set()
            answer.changed.set()

    def _record_answer(self, answer: Answer, cell_id: str | None) -> None:
        usage = answer.usage
        notebook, asked = self._asked.pop(answer, (self.notebook, None))
        turn = Turn(
            "assistant",
            answer.text,
            model=answer.model,
            status=answer.status,
            prompt_tokens=usage.prompt_tokens if usage else None,
            completion_tokens=usage.completion_tokens if usage else None,
            seconds=round(answer.seconds, 3),
            cell_id=cell_id,
            error=str(answer.error) if answer.error is not None else None,
            reply_to=asked.uid if asked is not None else None,  # not kept if its prompt went
            no_history=asked is not None and asked.no_history,
        )
        try:
            unsaved = self.store.add(notebook, answer.chat, turn)
        except Exception as error:  # the answer is on screen; say it could not be kept
            log.warning("could not save the answer: %s", error)
            unsaved = f"not saved to history ({error})"
        if unsaved and unsaved not in answer.warnings:
            answer.warnings.append(unsaved)

    # -- images --------------------------------------------------------------------------------

    def image(self, prompt: str, options: AskOptions, settings: Settings) -> ImageAnswer:
        """Generate pictures for ``prompt``; fetch them to bytes; record the turn."""
        target = resolve_target(options.model or "flux", settings)
        if target.kind == "chat":
            raise ConfigError(
                f"'{target.label}' is a chat model: use %%amigo for text, or pick an image model "
                "(flux, dalle, recraft, …)."
            )
        if not prompt.strip():
            raise ConfigError("Say what to draw: %amigo_image a lighthouse at dusk")
        asked = Turn("user", prompt, model=target.label, cell_id=options.cell_id)
        self.store.add(self.notebook, options.chat, asked, replace_cell=bool(options.cell_id))
        answer = ImageAnswer(model=target.label, chat=options.chat, prompt=prompt)
        self._asked[answer] = (self.notebook, asked)
        answer.future = self._runner.submit(self._draw(answer, target, settings, options.cell_id))
        return answer

    async def _draw(
        self, answer: ImageAnswer, target: Target, settings: Settings, cell_id: str | None
    ) -> None:
        status: Status = "complete"
        try:
            backend = self._backend(target, settings)
            result = await backend.image(ImageRequest(target.model, answer.prompt))
            # A reply may list any number of pictures; fetch (and keep) at most MAX_PICTURES.
            answer.skipped = max(0, len(result.images) - MAX_PICTURES)
            for image in result.images[:MAX_PICTURES]:
                answer.images.append(await self._fetch(image, answer.prompt, settings))
        except asyncio.CancelledError:
            status = "stopped"
            raise
        except BaseException as error:
            answer.error = error
            status = "error"
            if not isinstance(error, Exception):
                raise
        finally:
            count = len(answer.images)
            turn = Turn(
                "assistant",
                f"[{count} picture{'s' if count != 1 else ''} of: {answer.prompt}]"
                if count
                else "",
                model=answer.model,
                status=status,
                seconds=round(time.monotonic() - answer.started, 3),
                cell_id=cell_id,
                images=tuple(answer.images),
                error=str(answer.error) if answer.error is not None else None,
            )
            notebook, asked = self._asked.pop(answer, (self.notebook, None))
            if asked is not None:  # not kept if its prompt went (a reset while it drew)
                turn = dataclasses.replace(turn, reply_to=asked.uid)
            try:
                self.store.add(notebook, answer.chat, turn)  # a problem is the store's notice
            except Exception as error:
                log.warning("could not save the pictures: %s", error)
            answer.done.set()

    async def _fetch(self, image: Image, alt: str, settings: Settings) -> StoredImage:
        if image.b64_json:
            try:
                data = base64.b64decode(image.b64_json, validate=True)
            except (binascii.Error, ValueError):
                raise InvalidResponseError("The picture's base64 data is corrupt.") from None
            return StoredImage(_sniff(data, "the base64 picture"), data, alt)
        url = image.url or ""
        if not url.lower().startswith(("http://", "https://")):
            raise InvalidResponseError(
                f"Refused to fetch the picture from '{url[:80]}': only http(s) URLs are fetched. "
                "Run the cell again, or pick another image model."
            )
        client = self._downloads.get(settings)
        if client is None:
            client = self._downloads[settings] = HTTPClient(settings, service="the image host")
        response = await client.get(url, limit=IMAGE_LIMIT, timeout=settings.timeouts.image)
        status = response.status_code
        if 300 <= status < 400:
            # Never followed: a redirect could point at a local file or a private address
            # (cloud metadata, the user's own services) that the image server should not reach.
            target = response.headers.get("location", "")
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
            raise InvalidResponseError(
                f"Refused the picture at {_host(url)}: it redirects ({status}) to "
                f"'{target[:80]}'{what}, and picture redirects are not followed. Run the cell "
                "again, or pick another image model."
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
        return StoredImage(_sniff(data, f"the picture at {_host(url)}"), data, alt)

    # -- model lists -----------------------------------------------------------------------------

    def list_models(self, settings: Settings) -> list[ModelSource]:
        """The local model and every endpoint's live models, fetched at once; a server that is
        down is listed with its error, without holding up the rest."""
        return self._runner.call(self.gather_models(settings))

    async def gather_models(self, settings: Settings) -> list[ModelSource]:
        """:meth:`list_models` on the loop (the panel awaits it without blocking anyone)."""
        from .backends.local import default_model_path
        from .backends.openai import OpenAIBackend
        from .redact import scrub

        secrets = settings.known_secrets()  # a server may echo its key in the model ids

        async def one(target: Target) -> ModelSource:
            endpoint = target.endpoint
            assert endpoint is not None
            backend = self._backend(target, settings)
            assert isinstance(backend, OpenAIBackend)
            try:
                models = await backend.models()
            except AmigoError as error:
                return ModelSource(endpoint.name, endpoint.url, error=scrub(str(error), secrets))
            return ModelSource(
                endpoint.name,
                endpoint.url,
                tuple(f"{endpoint.name}:{scrub(m, secrets)}" for m in models),
            )

        targets = [Target("openai", "", e.name, "any", e) for e in settings.endpoints]
        sources = list(await asyncio.gather(*(one(t) for t in targets)))
        try:
            where = settings.local_model or str(default_model_path())
            local = ModelSource("local", where, ("local",))
        except ConfigError as error:
            local = ModelSource("local", "not installed", error=str(error))
        return [local, *sources]

    # -- lifetime ------------------------------------------------------------------------------

    def _backend(self, target: Target, settings: Settings) -> Backend:
        """The pooled backend for ``target``; the local model is one per kernel, whatever the
        other settings, so it loads once."""
        key: object = (target.backend, target.endpoint, settings)
        if target.backend == "local":
            key = ("local", target.model)
        backend = self._backends.get(key)
        if backend is None:
            backend = self._backends[key] = self._factory(target, settings)
        return backend

    async def aclose(self) -> None:
        """Close every pooled client (on the loop thread)."""
        backends, self._backends = self._backends, {}
        downloads, self._downloads = self._downloads, {}
        for backend in backends.values():
            await backend.aclose()
        for client in downloads.values():
            await client.aclose()


def _make_backend(target: Target, settings: Settings) -> Backend:
    if target.backend == "openai":
        from .backends.openai import OpenAIBackend

        assert target.endpoint is not None
        return OpenAIBackend(settings, target.endpoint)
    if target.backend == "local":
        from .backends.local import LocalBackend

        return LocalBackend(target.model or None)
    from .backends.amigo import AmigoBackend

    return AmigoBackend(settings)


def _sniff(data: bytes, what: str) -> str:
    for magic, mime in _IMAGE_MAGIC.items():
        if data.startswith(magic):
            return mime
    raise InvalidResponseError(f"{what[:1].upper()}{what[1:]} is not a PNG, JPEG, GIF or WebP.")


def _host(url: str) -> str:
    return url.split("/")[2] if url.count("/") >= 2 else url


def _bug_line(error: BaseException | None) -> str | None:
    return None if error is None else f"{type(error).__name__}: {error}"
