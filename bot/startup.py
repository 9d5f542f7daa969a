"""Process-wide start-up, done by ``newsdesk``'s ``main`` before any command runs: logging, the native
libraries' thread settings, and the import of the index library with the garbage collector paused.

Everything here may run many times in one process (the tests call ``main`` again and again): logging gets
one handler however often it is configured, and the native settings and the imports happen once.
"""

from __future__ import annotations

import gc
import importlib
import logging
import os
import sys

from newsdesk.index.errors import ConfigError
from newsdesk.index.settings import Settings

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
# httpx logs every request URL at INFO, the Telegram bot token included; httpcore logs each request at DEBUG
QUIET_LOGGERS = ("httpx", "httpcore")
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_native_done = False


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of the record, not the stream of the first call."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property
    def stream(self):
        return sys.stderr


def log_level(settings: Settings, default: str, verbosity: int = 0) -> int:
    """The level to log at: ``NEWSDESK_LOG_LEVEL`` (the command's ``default`` when unset), lowered to INFO
    by ``-v`` and to DEBUG by ``-vv`` (never raised: ``-v`` only ever means more)."""
    name = settings.log_level or default
    if name not in LEVELS:
        raise ConfigError(f"NEWSDESK_LOG_LEVEL must be {', '.join(LEVELS[:-1])} or {LEVELS[-1]}, not {name!r}")
    level = logging.getLevelName(name)
    if verbosity:
        level = min(level, logging.INFO if verbosity == 1 else logging.DEBUG)
    return level


def configure_logging(level: int) -> None:
    """One handler on the root logger, to the current standard error, at ``level``; httpx and httpcore at
    WARNING whatever the level. Calling it again changes the level and adds nothing."""
    root = logging.getLogger()
    if not any(isinstance(h, _StderrHandler) for h in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter(FORMAT))
        root.addHandler(handler)
    root.setLevel(level)
    quiet_http_loggers()


def quiet_http_loggers() -> None:
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def configure_process() -> None:
    """The native libraries' process-wide settings, once per process and before the libraries load:

    - OpenMP (the e5 encoder's engine): idle workers sleep instead of spinning, which would steal the cores
      from everything else (the USE encoder, the bot's event loop) between e5 calls. The variable is read
      when the runtime loads, so it is set here, before any model; a value the user set is kept.
    - BLAS: one thread for the whole process. Bulk encoding runs several encoders side by side instead (see
      ``UseEmbedder._bulk``), and the small matrix products elsewhere gain nothing from a second thread,
      whose spinning after each product cost ~35 ms of CPU per answer. Set before any model is loaded:
      the USE encoder's per-call limit restores the value it found, so a limit set during one of its calls
      would be undone."""
    global _native_done
    if _native_done:
        return
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import numpy  # noqa: F401 - threadpoolctl limits the BLAS libraries already loaded: numpy's
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")
    _native_done = True


def load_library(settings: Settings, module: str) -> None:
    """Start loading the model in the background, then import ``module`` and with it the index library
    (chromadb, llama-index: about 2 s of imports) with the cyclic garbage collector paused, and move what the
    imports built out of its reach (``gc.freeze``): those objects live as long as the process, and every full
    collection, the last one at exit included, would walk them again. Measured on ``index --fast`` of 1k
    passages: the imports' collections took 0.2 s, the exit 0.37 s, against 0.08 s with the freeze.
    Once ``module`` is imported this only starts the (then instant) warm-up."""
    from newsdesk.index.embedding import prewarm

    prewarm(settings)
    if module in sys.modules:
        return
    gc.disable()
    try:
        importlib.import_module(module)
    finally:
        gc.freeze()
        gc.enable()


def start(settings: Settings, *, default_level: str = "WARNING", verbosity: int = 0,
          library: str | None = None) -> None:
    """Everything a command needs before it runs: logging, the process-wide settings and, when it uses
    the index, ``library`` imported (see ``load_library``)."""
    configure_logging(log_level(settings, default_level, verbosity))
    configure_process()
    if library is not None:
        load_library(settings, library)
