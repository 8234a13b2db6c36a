"""A real ipykernel for tests, driven message by message (interrupts, cell ids, payloads)."""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from jupyter_client.manager import KernelManager


@dataclass
class Execution:
    reply: dict[str, Any]
    messages: list[dict[str, Any]] = field(default_factory=list)

    @property
    def status(self) -> str:
        return str(self.reply["content"]["status"])

    def of_type(self, *kinds: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["msg_type"] in kinds]

    @property
    def displays(self) -> list[dict[str, Any]]:
        return self.of_type("display_data", "update_display_data")

    @property
    def stream_text(self) -> str:
        return "".join(m["content"]["text"] for m in self.of_type("stream"))


class Kernel:
    def __init__(self, km: KernelManager) -> None:
        self.km = km
        self.kc = km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)

    def submit(self, code: str, *, cell_id: str | None = None, stdin: bool = False) -> str:
        """Send ``code`` as JupyterLab would (the cell id in the metadata); return the msg id."""
        content = {
            "code": code,
            "silent": False,
            "store_history": True,
            "user_expressions": {},
            "allow_stdin": stdin,
            "stop_on_error": False,
        }
        msg = self.kc.session.msg(
            "execute_request", content, metadata={"cellId": cell_id} if cell_id else {}
        )
        self.kc.shell_channel.send(msg)
        return str(msg["header"]["msg_id"])

    def wait(
        self,
        msg_id: str,
        *,
        timeout: float = 60,
        on_message: Callable[[dict[str, Any]], None] | None = None,
        answer: str | None = None,
    ) -> Execution:
        """Collect the request's messages until the kernel is idle again, and its reply.

        With ``answer``, an ``input_request`` (e.g. a hidden password prompt) is answered so.
        """
        execution = Execution(reply={})
        deadline = time.monotonic() + timeout
        idle = False
        while not idle:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no idle after {timeout} s")
            if answer is not None and self.kc.stdin_channel.msg_ready():
                request = self.kc.get_stdin_msg(timeout=1)
                execution.messages.append(request)
                self.kc.input(answer)
            try:
                message = self.kc.get_iopub_msg(timeout=min(remaining, 0.1))
            except queue.Empty:
                continue
            if message["parent_header"].get("msg_id") != msg_id:
                continue
            execution.messages.append(message)
            if on_message is not None:
                on_message(message)
            if message["msg_type"] == "status" and message["content"]["execution_state"] == "idle":
                idle = True
        while True:
            reply = self.kc.get_shell_msg(timeout=max(1.0, deadline - time.monotonic()))
            if reply["parent_header"].get("msg_id") == msg_id:
                execution.reply = reply
                return execution

    def execute(
        self,
        code: str,
        *,
        cell_id: str | None = None,
        timeout: float = 60,
        on_message: Callable[[dict[str, Any]], None] | None = None,
        answer: str | None = None,
    ) -> Execution:
        """Run ``code`` and wait for it (``answer`` replies to an input prompt)."""
        msg_id = self.submit(code, cell_id=cell_id, stdin=answer is not None)
        return self.wait(msg_id, timeout=timeout, on_message=on_message, answer=answer)

    def interrupt(self) -> None:
        self.km.interrupt_kernel()


@contextmanager
def running_kernel(cwd: str | None = None, output: Any = None) -> Iterator[Kernel]:
    """A fresh python3 kernel; ``output`` (a file) receives its stdout and stderr."""
    km = KernelManager(kernel_name="python3")
    if output is not None:
        km.start_kernel(cwd=cwd, stdout=output, stderr=output)
    else:
        km.start_kernel(cwd=cwd)
    kernel = Kernel(km)
    try:
        yield kernel
    finally:
        kernel.kc.stop_channels()
        km.shutdown_kernel(now=True)
