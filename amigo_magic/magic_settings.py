"""The settings of the magics: ``AmigoMagics``'s traits (``%config AmigoMagics``), each
checked when it is set, and :meth:`AmigoSettings.preferences`, the one frozen value the session
reads them through. :class:`~.magics.AmigoMagics` inherits them.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from IPython.core.magic import Magics
from traitlets import Bool, Dict, Enum, Float, Int, TraitError, Unicode, validate
from traitlets.config import Config

from .config import DEFAULT_IMAGE_MODEL, FORMATS, Preferences, Secret, Timeouts

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

__all__ = ["AmigoSettings"]

log = logging.getLogger("amigo_magic")


class AmigoSettings(Magics):
    """The traits of :class:`~.magics.AmigoMagics` and what they become for the session."""

    default_model = Unicode(
        "",
        help="Model for %%amigo without -m (alias or id). Empty: $AMIGO_MODEL, else gpt-4o-mini.",
    ).tag(config=True)
    image_model = Unicode(DEFAULT_IMAGE_MODEL, help="Model for %amigo_image without -m.").tag(
        config=True
    )
    base_url = Unicode(
        "", help="API base URL. Empty: $AMIGO_BASE_URL, else https://api.amigochat.io/v1."
    ).tag(config=True)
    device_version = Unicode(
        "", help="x-device-version sent to AmigoChat. Empty: $AMIGO_DEVICE_VERSION, else 1.0.45."
    ).tag(config=True)
    max_history = Int(
        20, help="Earlier messages sent with each prompt (user and assistant each count one)."
    ).tag(config=True)
    default_format = Enum(FORMATS, "markdown", help="Output format without -f.").tag(config=True)
    max_tokens = Int(4000, help="Longest answer, in tokens, without --max-tokens.").tag(config=True)
    system_prompt = Unicode("", help="System message sent with every prompt.").tag(config=True)
    connect_timeout = Float(10.0, help="Seconds to wait for a connection.").tag(config=True)
    read_timeout = Float(
        60.0, help="Seconds of silence allowed before the first token and between tokens."
    ).tag(config=True)
    image_timeout = Float(300.0, help="Seconds one image request may take.").tag(config=True)
    throttle = Float(
        0.05, help="Least seconds between display updates while an answer streams."
    ).tag(config=True)
    endpoints = Dict(
        {},
        help="Named OpenAI-compatible servers, used as --model NAME:MODEL, e.g. "
        "{'ollama': {'url': 'http://127.0.0.1:11434/v1'}, "
        "'openai': {'url': 'https://api.openai.com/v1', 'key_env': 'OPENAI_API_KEY'}}. "
        "Keys are read from the named environment variable at each call, never stored.",
    ).tag(config=True)
    context_budget = Int(
        2000, help="Tokens (estimated) each {name} field may send: a view says what it left out."
    ).tag(config=True)
    local_model_path = Unicode(
        "", help="GGUF file for --model local. Empty: $AMIGO_LOCAL_MODEL, else SmolLM2-135M."
    ).tag(config=True)
    cache = Enum(
        ("", "off", "auto", "replay"),
        "",
        help="Recorded answers. off: always call; auto: an identical request reuses its recorded "
        "answer, else calls and records; replay: never call (a request with no recording is an "
        "error naming what differs). Empty: $AMIGO_CACHE, else off.",
    ).tag(config=True)
    cache_file = Unicode(
        "",
        help="Keep recordings in this file (relative to the notebook's folder), to commit beside "
        "the notebook. Empty: $AMIGO_CACHE_FILE, else the history database.",
    ).tag(config=True)
    params = Dict(
        {},
        help="Model parameters sent with every chat request, e.g. {'seed': 7}; a cell's "
        "-p KEY=VALUE wins.",
    ).tag(config=True)
    budget_tokens = Int(
        0, help="This notebook's token cap: a request once it is reached is refused. 0: none."
    ).tag(config=True)
    budget_usd = Float(
        0.0, help="This notebook's cost cap in US dollars (known prices). 0: none."
    ).tag(config=True)
    approve_tools = Enum(
        ("ask", "always", "never"),
        "ask",
        help="Tool calls (%%amigo -T NAME): 'ask' before each (a run that cannot ask, such as "
        "jupyter execute, denies them), 'always' run them, 'never' deny them.",
    ).tag(config=True)
    max_tool_rounds = Int(
        8, help="Rounds of tool calls one answer may make (-T) before it is stopped."
    ).tag(config=True)
    nested_asyncio = Bool(
        True, help="asyncio.run() in a cell (where the kernel's loop runs) runs the coroutine on "
        "a loop of its own in a helper thread. False: it raises, as in plain IPython."
    ).tag(config=True)  # fmt: skip

    shell: InteractiveShell  # always given: the extension passes it
    notebook_model: str | None = None  # %amigo use
    key: Secret | None = None  # %amigo key: memory only
    _ready = False  # True once the magics are built: a refused %config raises from then on

    def _load_config(self, cfg: Any, section_names: Any = None, traits: Any = None) -> None:
        """A ``%config`` of a value that cannot work is refused (IPython shows the one line).
        Opening with one in the configuration (``ipython_config.py``, or a refused ``%config``
        that IPython kept in the shell's) keeps the default for it, says so, loads the rest."""
        try:
            super()._load_config(cfg, section_names=section_names, traits=traits)
            return
        except TraitError:
            if getattr(self, "_ready", False):
                raise
        for name, value in cfg.get(type(self).__name__, {}).items():
            one = Config({type(self).__name__: {name: value}})
            try:
                super()._load_config(one, section_names=section_names, traits=traits)
            except TraitError as error:
                log.warning("%s Using the default.", error)

    # -- settings, validated where they are set ----------------------------------------------------

    @validate("max_history", "max_tokens", "context_budget", "max_tool_rounds")
    def _at_least(self, proposal: Any) -> int:
        name, value = proposal["trait"].name, proposal["value"]
        low = 0 if name == "max_history" else 1
        if value < low:
            raise TraitError(
                f"AmigoMagics.{name} must be {low} or more (got {value}); the default is "
                f"{self.trait_defaults(name)}."
            )
        return int(value)

    @validate("budget_tokens", "budget_usd")
    def _budget(self, proposal: Any) -> float:
        name, value = proposal["trait"].name, proposal["value"]
        if not value >= 0:
            raise TraitError(f"AmigoMagics.{name} must be 0 (no cap) or more; got {value}.")
        return value  # type: ignore[no-any-return]

    @validate("throttle", "connect_timeout", "read_timeout", "image_timeout")
    def _seconds(self, proposal: Any) -> float:
        name, value = proposal["trait"].name, proposal["value"]
        if not value >= 0 or (value == 0 and name != "throttle"):
            need = "0 or more" if name == "throttle" else "more than 0"
            raise TraitError(
                f"AmigoMagics.{name} is in seconds and must be {need} (got {value}); the "
                f"default is {self.trait_defaults(name)}."
            )
        return float(value)

    def preferences(self) -> Preferences:
        """The traits, ``%amigo use`` and ``%amigo key`` as one frozen value, for the session."""
        return Preferences(
            model=self.notebook_model or self.default_model,
            image_model=self.image_model,
            base_url=self.base_url,
            device_version=self.device_version,
            api_key=self.key,
            local_model=self.local_model_path,
            endpoints=dict(self.endpoints),
            timeouts=Timeouts(
                connect=self.connect_timeout, read=self.read_timeout, image=self.image_timeout
            ),
            max_history=self.max_history,
            max_tokens=self.max_tokens,
            system_prompt=self.system_prompt,
            default_format=self.default_format,
            throttle=self.throttle,
            context_budget=self.context_budget,
            approve_tools=self.approve_tools,
            max_tool_rounds=self.max_tool_rounds,
            cache=self.cache,
            cache_file=self.cache_file,
            params=dict(self.params),
            budget_tokens=self.budget_tokens,
            budget_usd=self.budget_usd,
        )
