"""Helpers shared by the tests and the benchmarks (no pytest here: the benchmarks run without it): where
things are, a clean environment for newsdesk subprocesses, free ports, a real Chroma server."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
XQUAD = SHARED / "eval" / "xquad-dev"
EXAMPLE_DIR = ROOT / "examples" / "articles"
SEED_QUESTIONS = SHARED / "eval" / "seed-questions.jsonl"


def clean_env(home: Path | None = None, **extra: str) -> dict:
    """The environment for a newsdesk command (a subprocess, or ``run_cli`` in-process): nothing from the
    developer's NEWSDESK_/OPENAI_/CHROMA_/TELEGRAM_ variables, a scratch home (newsdesk itself is imported
    from the installed package)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("NEWSDESK_", "OPENAI_", "CHROMA_", "TELEGRAM_"))}
    if home is not None:
        env["NEWSDESK_HOME"] = str(home)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen | None, timeout: float = 15) -> None:
    """Terminate a child process, and kill it if it does not exit in time."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


class ChromaServer:
    """``chroma run --path DIR --host 127.0.0.1 --port N`` for the duration of a ``with`` block; raises
    RuntimeError when it does not start."""

    def __init__(self, path: Path, startup_timeout: float = 60.0) -> None:
        self.path = path
        self.port = free_port()
        self.host = "127.0.0.1"
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> ChromaServer:
        exe = shutil.which("chroma", path=str(Path(sys.executable).parent)) or shutil.which("chroma")
        if exe is None:
            raise RuntimeError("the `chroma` command (from the chromadb package) is not installed")
        self.proc = subprocess.Popen([exe, "run", "--path", str(self.path), "--host", self.host,
                                      "--port", str(self.port)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"chroma run exited with {self.proc.returncode}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    break
            except OSError:
                time.sleep(0.1)
        else:
            self.stop()
            raise RuntimeError(f"chroma run did not start within {self.startup_timeout:.0f} s")
        self._wait_ready(deadline)
        return self

    def _wait_ready(self, deadline: float) -> None:
        import urllib.request

        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"http://{self.host}:{self.port}/api/v2/heartbeat", timeout=2):
                    return
            time.sleep(0.2)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def env(self) -> dict:
        return {"CHROMA_HOST": self.host, "CHROMA_PORT": str(self.port)}

    def stop(self) -> None:
        stop(self.proc)

    def __exit__(self, *exc) -> None:
        self.stop()
