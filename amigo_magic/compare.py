"""Side by side (``%%amigo -m claude,gpt-4o,local``): the same messages to each model at once,
one live :class:`~.answer.Answer` each, and nothing in the conversation until one is kept.

The messages are the ones a plain ``%%amigo`` would send now (the chat's window, the system
message, the prompt's pictures): :meth:`~.session.ChatSession.preview` builds them, once per
model. The answers stream through the session's ``_stream`` — each through the cache step
first (the budget, a recording that answers it) and charged to the budget — but are not
kept; :meth:`Comparison.keep` writes the prompt and the chosen answer as the turn, as if only
that model had been asked.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .answer import Answer
from .backends import ChatRequest
from .errors import ConfigError
from .history import Turn

if TYPE_CHECKING:
    from .context import Prompt
    from .routing import Target
    from .session import AskOptions, ChatSession

__all__ = ["MAX_MODELS", "Comparison", "start"]

MAX_MODELS = 4  # columns that still read side by side


class Comparison:
    """The answers of one side-by-side cell, in the order the models were named."""

    def __init__(
        self,
        session: ChatSession,
        prompt: Prompt,
        options: AskOptions,
        answers: Sequence[Answer],
        targets: Sequence[Target],
    ) -> None:
        self.session = session
        self.prompt = prompt
        self.options = options
        self.answers = tuple(answers)
        self.targets = tuple(targets)
        self.kept: int | None = None

    @property
    def done(self) -> bool:
        return all(answer.done.is_set() for answer in self.answers)

    def stop(self) -> None:
        for answer in self.answers:
            answer.stop()

    def keep(self, number: int) -> Answer:
        """Record answer ``number`` (1-based) as this prompt's turn in the chat."""
        count = len(self.answers)
        if not 1 <= number <= count:
            raise ConfigError(f"Keep which answer? Give 1 to {count}: %amigo keep 1")
        answer = self.answers[number - 1]
        if not answer.done.is_set():
            raise ConfigError(f"Answer {number} is still coming: keep it once it has ended.")
        if self.kept is not None:
            raise ConfigError(
                f"Answer {self.kept} of this comparison is already kept; run the cell again to "
                "compare anew."
            )
        session, options = self.session, self.options
        asked = Turn(
            "user",
            self.prompt.text,
            model=answer.model,
            images=tuple(picture.stored() for picture in self.prompt.pictures),
            cell_id=options.cell_id,
            no_history=not options.use_history,
        )
        store, notebook = session.store, session.notebook
        session.cache.discharge(answer)  # its turn counts toward the budget from now on
        store.add(notebook, options.chat, asked, replace_cell=bool(options.cell_id))
        turn = dataclasses.replace(
            answer.turn(options.cell_id), reply_to=asked.uid, no_history=asked.no_history
        )
        unsaved = store.add(notebook, options.chat, turn)
        if unsaved:
            raise ConfigError(f"Answer {number} could not be kept: {unsaved}")
        self.kept = number
        return answer


def start(
    session: ChatSession, prompt: Prompt, options: AskOptions, models: Sequence[str]
) -> Comparison:
    """Ask every one of ``models`` at once; the comparison with its live answers at once.

    Raises before anything is sent for fewer than two models, too many, or an unknown one.
    """
    names = [name.strip() for name in models if name.strip()]
    if len(names) < 2:
        raise ConfigError("Side by side needs two models or more: -m claude,gpt-4o")
    if len(names) > MAX_MODELS:
        raise ConfigError(f"Side by side takes at most {MAX_MODELS} models; got {len(names)}.")
    settings = session.settings()
    each = [dataclasses.replace(options, model=name) for name in names]
    targets = [session._chat_target(one, settings, prompt) for one in each]
    previews = [session.preview(prompt, one) for one in each]  # nothing written or sent
    cache = session.cache  # the budget, the local model's parameters, a replay: before any
    plans = [cache.before_chat(prompt, one, t) for one, t in zip(each, targets, strict=True)]
    answers = []
    for one, target, preview, plan in zip(each, targets, previews, plans, strict=True):
        answer = Answer(
            model=target.label,
            chat=options.chat,
            secrets=settings.known_secrets(),
            context=prompt.context,
        )
        request = ChatRequest(target.model, preview.messages, one.params)
        cache.start(plan, answer, target, preview.messages, one.params.extra)

        async def run(
            answer: Answer = answer, request: ChatRequest = request, target: Any = target
        ) -> None:
            try:
                await session._stream(answer, request, target, settings)
                cache.completed(answer)  # recorded (cache auto or replay)
                answer.end()
            except asyncio.CancelledError:
                answer.cancelled()
                raise
            except Exception as error:
                answer.fail(error)
            finally:
                answer.settle()
                # it cost its tokens, kept or not; a refused request cost nothing
                if "replayed" not in answer.meta and not answer.unanswered:
                    cache.charge(target, request.messages, answer.usage, answer.text, answer)
                answer.close()  # not recorded: `%amigo keep N` does that

        answer.running(session._runner.submit(run()))
        answers.append(answer)
    return Comparison(session, prompt, options, answers, targets)
