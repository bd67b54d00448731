"""Progress of a long run on stderr: a redrawn line on a terminal, a log line every ``interval`` seconds otherwise.

Standard library only (the edge runtime imports it).
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress"]


class Progress:
    """``done/total images, N img/s, K failed, eta`` for ``total`` inputs (``enabled=False``: silent)."""

    def __init__(self, total: int, *, what: str = "images", stream: TextIO | None = None, enabled: bool = True,
                 interval: float = 10.0) -> None:
        self.total, self.what, self.enabled = total, what, enabled
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = 0.2 if self.tty else interval
        self.done = self.failed = 0
        self.start = self._last = time.monotonic()

    def rate(self) -> float:
        """Inputs per second since the start."""
        return self.done / max(time.monotonic() - self.start, 1e-9)

    def line(self) -> str:
        rate = self.rate()
        left = (self.total - self.done) / rate if rate > 0 else 0.0
        failed = f", {self.failed} failed" if self.failed else ""
        return (f"{self.done}/{self.total} {self.what}, {rate:.1f} {self.what}/s{failed}, "
                f"eta {int(left) // 60}:{int(left) % 60:02d}")

    def update(self, done: int, failed: int = 0) -> None:
        """Count ``done`` more inputs (``failed`` of them with an error)."""
        self.done += done
        self.failed += failed
        now = time.monotonic()
        if self.enabled and now - self._last >= self.interval:
            self._last = now
            self._show()

    def _show(self) -> None:
        if self.tty:
            self.stream.write("\r" + self.line() + "\033[K")
        else:
            self.stream.write("uad infer: " + self.line() + "\n")
        self.stream.flush()

    def close(self) -> None:
        """The last line (a newline ends the redrawn one)."""
        if self.enabled:
            self._show()
            if self.tty:
                self.stream.write("\n")
                self.stream.flush()
