"""Progress output: a tqdm bar over each epoch's batches on a terminal, plain lines
otherwise (CI logs, pipes, files), and a JSON-lines metrics log.

Epoch summaries always go to stdout as one line each, so a non-TTY run is a readable log
and a TTY run keeps them above the bar (``tqdm.write``).
"""
from __future__ import annotations

import json
import sys


class Progress:
    def __init__(self, mode: str = "auto", stream=None):
        self.stream = stream or sys.stdout
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "lines"
        if mode == "bar":
            try:
                import tqdm  # noqa: F401
            except ImportError:
                mode = "lines"
        self.mode, self.bar = mode, None

    def start_epoch(self, epoch: int, epochs: int, total: int, done: int = 0):
        if self.mode == "bar":
            from tqdm import tqdm
            self.bar = tqdm(total=total, initial=done, desc=f"epoch {epoch}/{epochs}",
                            unit="batch", leave=False, dynamic_ncols=True)

    def update(self, loss: float):
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss:.4f}", refresh=False)

    def end_epoch(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def line(self, text: str):
        if self.mode == "none":
            return
        if self.bar is not None:
            from tqdm import tqdm
            tqdm.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)


class JsonLog:
    """One JSON object per line: ``{"event": "epoch", ...metrics}``, then ``"test"``."""

    def __init__(self, path: str | None, append: bool = False):
        self.f = open(path, "a" if append else "w") if path else None

    def write(self, event: str, record: dict):
        if self.f is not None:
            self.f.write(json.dumps({"event": event, **record}, sort_keys=True) + "\n")
            self.f.flush()

    def close(self):
        if self.f is not None:
            self.f.close()
