"""Progress of a long command (``replay --all``, ``requeue-failed``), on stderr.

On a terminal one line is redrawn in place after every step; otherwise (a log, a pipe) a line is
written every ``every`` items, so a long run in a deploy log shows it is alive without flooding it.
The command's result stays on stdout.
"""

from __future__ import annotations

from typing import TextIO


class Progress:
    """Counts items done of ``total`` (``None`` when unknown in advance) under ``label``."""

    def __init__(self, label: str, stream: TextIO, *, total: int | None = None, every: int = 1000) -> None:
        self.label = label
        self.stream = stream
        self.total = total
        self.every = every
        self.done = 0
        self._tty = stream.isatty()
        self._next = every

    def advance(self, count: int, note: str = "") -> None:
        """``count`` more items are done; ``note`` says something about them (e.g. "3 changed")."""
        self.done += count
        if self._tty:
            self.stream.write(f"\r{self._line(note)}")
            self.stream.flush()
        elif self.done >= self._next:
            self.stream.write(self._line(note) + "\n")
            self.stream.flush()
            self._next = (self.done // self.every + 1) * self.every

    def finish(self) -> None:
        """End the redrawn line on a terminal."""
        if self._tty and self.done:
            self.stream.write("\n")
            self.stream.flush()

    def _line(self, note: str) -> str:
        of = f"/{self.total:,}" if self.total is not None else ""
        return f"{self.label}: {self.done:,}{of}" + (f", {note}" if note else "")
