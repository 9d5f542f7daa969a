"""The written answer as it is being written, at a terminal (``newsdesk ask`` / ``chat`` in LLM mode).

One line on standard error, rewritten as the model writes (its last words, as many as fit the terminal's
width), then erased before the verified answer is printed: nothing unverified stays on the screen, and standard
output holds only the answer. Only when standard error is a terminal; otherwise :func:`ticker` gives None and
the answer comes whole, as before.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import unicodedata
from collections.abc import Iterator
from typing import TextIO

PREFIX = "… "
CLEAR = "\r\x1b[K"  # back to the start of the line, erase it


def _width(char: str) -> int:
    """Columns a character takes at a terminal: 2 for wide (CJK) ones, 0 for combining marks."""
    if unicodedata.combining(char):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def tail(text: str, columns: int) -> str:
    """The end of ``text`` (white space made single spaces) that fits in ``columns`` terminal columns."""
    text = " ".join(text.split())
    used, start = 0, len(text)
    while start > 0 and used + _width(text[start - 1]) <= columns:
        start -= 1
        used += _width(text[start])
    return text[start:]


class Ticker:
    """An ``on_progress`` for ``Engine.ask`` that shows the text on one line of ``stream``; :meth:`clear`
    erases it."""

    def __init__(self, stream: TextIO) -> None:
        self.stream, self.shown = stream, False

    async def __call__(self, text: str) -> None:
        columns = shutil.get_terminal_size().columns - len(PREFIX) - 1
        self.stream.write(f"{CLEAR}{PREFIX}{tail(text, max(columns, 10))}")
        self.stream.flush()
        self.shown = True

    def clear(self) -> None:
        if self.shown:
            self.stream.write(CLEAR)
            self.stream.flush()
            self.shown = False


def ticker(llm_enabled: bool, stream: TextIO | None = None) -> Ticker | None:
    """A :class:`Ticker` on standard error in LLM mode when it is a terminal, else None."""
    stream = stream or sys.stderr
    return Ticker(stream) if llm_enabled and stream.isatty() else None


@contextlib.contextmanager
def streaming(llm_enabled: bool) -> Iterator[Ticker | None]:
    """:func:`ticker` for the block, erased when it ends (the answer, an error, Ctrl-C)."""
    shown = ticker(llm_enabled)
    try:
        yield shown
    finally:
        if shown is not None:
            shown.clear()
