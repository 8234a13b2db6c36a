"""Execute notebooks/quickstart.ipynb headless and save it with its outputs — offline.

The notebook's default model is the embedded one (``AMIGO_MODEL=local``: SmolLM2-135M-Instruct
through llama.cpp's prebuilt xllamacpp binding, in the kernel). Cells that name an AmigoChat
model or draw a picture talk to the bundled stand-in AmigoChat server (tests/amigo_server.py),
which speaks the real protocol on 127.0.0.1 and echoes the prompt: no network, no key.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.amigo_server import AmigoServer  # noqa: E402


def main() -> int:
    path = ROOT / "notebooks" / "quickstart.ipynb"
    nb = nbformat.read(path, as_version=4)
    with AmigoServer() as server:
        os.environ["AMIGO_BASE_URL"] = server.base_url
        os.environ.setdefault("AMIGO_MODEL", "local")
        os.environ.setdefault("AMIGO_HOME", str(ROOT / ".cache" / "amigo-home"))
        start = time.monotonic()
        client = NotebookClient(
            nb, timeout=120, kernel_name="python3", allow_errors=True,
            resources={"metadata": {"path": str(path.parent)}},
        )  # fmt: skip
        client.execute()
        seconds = time.monotonic() - start
    nbformat.write(nb, path)
    errors = [
        o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
        if o.output_type == "error" and o.get("ename") != "ZeroDivisionError"
    ]  # fmt: skip
    print(f"executed {path.relative_to(ROOT)} in {seconds:.1f} s: {len(nb.cells)} cells")
    for error in errors:
        print(f"unexpected error: {error.ename}: {error.evalue}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
