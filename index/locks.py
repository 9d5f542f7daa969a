"""Locks between the processes (and threads) that share one home: see README, "Several processes on one home".

Embedded Chroma keeps each process's own in-memory view of the vector indexes, and writes them back to disk not
only when a process writes but also when it opens a collection (it applies the log it finds and saves the
index). Two processes doing either at once tear the files: a reader that opened its view while another process
wrote was measured to crash (a segmentation fault), or to grow a segment to 78 GB until the disk was full. So:

- ``<home>/write.lock``, the **writer lock**, is held exclusively for a whole writing job (an ``index`` run, a
  round of the bot's stage-2 fill, ``/add``): one writer at a time per home. A second one waits, saying so once.
- ``<home>/store.lock``, the **store lock**, is held exclusively for each single store write and each opening of
  a view (both may write Chroma's files), a short time each: a reader opens its view between two writes.

Both are ``fcntl.flock`` locks: the kernel releases them when a process dies, ``kill -9`` included. A flock is
held by an open file, so the threads of one process exclude each other too; each lock object here is also
re-entrant within a thread (a write inside a write takes nothing more).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

log = logging.getLogger(__name__)


class HomeLock:
    """An exclusive lock on a file of the home, re-entrant within a thread. Where the file cannot be created
    (a read-only home: nothing can be written there anyway) the lock is not taken."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._guard = threading.RLock()  # the threads of this process, one at a time
        self._depth = 0
        self._fd: int | None = None

    def _open(self) -> int | None:
        for flags in (os.O_RDWR | os.O_CREAT, os.O_RDONLY):
            try:
                return os.open(self.path, flags, 0o644)
            except OSError:
                continue
        log.debug("cannot open %s: not locking", self.path)
        return None

    def _take(self, blocking: bool) -> bool:
        """The file lock for the first level of this thread's holding; False: another process holds it."""
        fd = self._open()
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                os.close(fd)
                return False
        self._fd = fd
        return True

    @contextlib.contextmanager
    def hold(self, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
        """Hold the lock for the block, waiting for it; ``on_wait`` is called once first when another process
        (or thread) holds it."""
        said = False

        def waiting() -> None:
            nonlocal said
            if on_wait is not None and not said:
                said = True
                on_wait()

        if not self._guard.acquire(blocking=False):
            waiting()
            self._guard.acquire()
        try:
            if self._depth == 0 and not self._take(blocking=False):
                waiting()
                self._take(blocking=True)
            self._depth += 1
            try:
                yield
            finally:
                self._release()
        finally:
            self._guard.release()

    @contextlib.contextmanager
    def attempt(self) -> Iterator[bool]:
        """Hold the lock for the block if it is free now: yields True, or False (held elsewhere) at once."""
        if not self._guard.acquire(blocking=False):
            yield False
            return
        try:
            if self._depth == 0 and not self._take(blocking=False):
                yield False
                return
            self._depth += 1
            try:
                yield True
            finally:
                self._release()
        finally:
            self._guard.release()

    @property
    def held(self) -> bool:
        """Whether the calling thread holds the lock."""
        if not self._guard.acquire(blocking=False):
            return False
        try:
            return self._depth > 0
        finally:
            self._guard.release()

    def _release(self) -> None:
        self._depth -= 1
        if self._depth == 0 and self._fd is not None:
            os.close(self._fd)  # closing the file releases the flock
            self._fd = None


class ViewLock:
    """Readers and a reopener of one store's view within a process: store calls share it, a reopen (which
    closes the old Chroma client) waits until no call is under way and lets none start meanwhile. Shared
    holding is re-entrant per thread (a store call inside another never waits)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._reopening = False
        self._mine = threading.local()

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        depth = getattr(self._mine, "depth", 0)
        if depth == 0:
            with self._cond:
                while self._reopening:
                    self._cond.wait()
                self._readers += 1
        self._mine.depth = depth + 1
        try:
            yield
        finally:
            self._mine.depth = depth
            if depth == 0:
                with self._cond:
                    self._readers -= 1
                    self._cond.notify_all()

    @contextlib.contextmanager
    def exclusive(self, timeout: float) -> Iterator[bool]:
        """Yields True with no store call under way (none starts until the block ends), or False when calls
        still run after ``timeout`` s (e.g. a generator nobody finished) or this thread is inside one."""
        if getattr(self._mine, "depth", 0):
            yield False
            return
        with self._cond:
            while self._reopening:
                self._cond.wait()
            self._reopening = True
            ok = self._cond.wait_for(lambda: self._readers == 0, timeout)
            if not ok:
                self._reopening = False
                self._cond.notify_all()
        if not ok:
            yield False
            return
        try:
            yield True
        finally:
            with self._cond:
                self._reopening = False
                self._cond.notify_all()
