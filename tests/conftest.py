"""Shared fixtures: settings pointing at a scratch home, an index of the example article, a real Chroma
server (``chroma run``) for server-mode tests."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from index.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
EXAMPLE_DIR = ROOT / "examples" / "articles"
EXAMPLE = EXAMPLE_DIR / "karabakh-2020-09-28.txt"
XQUAD = SHARED / "eval" / "xquad-dev"
SEED_QUESTIONS = SHARED / "eval" / "seed-questions.jsonl"
NEWSDESK = [sys.executable, "-m", "bot.cli"]


def make_settings(home: Path, **overrides) -> Settings:
    """Settings for a test: nothing from the developer's environment or .env, a scratch home."""
    base = Settings.load(environ={"NEWSDESK_HOME": str(home)}, env_file=None)
    return replace(base, **overrides)


def run_cli(*args: str, home: Path | None = None, env: dict | None = None, timeout: float = 300,
            check: bool = False) -> subprocess.CompletedProcess:
    """Run the real `newsdesk` command in a subprocess with a clean environment."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("NEWSDESK_", "OPENAI_", "CHROMA_",
                                                                        "TELEGRAM_"))}
    full_env["PYTHONPATH"] = str(ROOT)
    if home is not None:
        full_env["NEWSDESK_HOME"] = str(home)
    full_env.update(env or {})
    proc = subprocess.run([*NEWSDESK, *args], capture_output=True, text=True, env=full_env, timeout=timeout,
                          cwd=home.parent if home is not None else None)
    if check and proc.returncode != 0:
        raise AssertionError(f"newsdesk {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def example_index(tmp_path_factory) -> Path:
    """A home with the example article indexed (both stages). Copy it before writing to it."""
    home = tmp_path_factory.mktemp("example") / "home"
    run_cli("index", str(EXAMPLE_DIR), home=home, check=True)
    return home


@pytest.fixture
def example_home(example_index, tmp_path) -> Path:
    """A private, writable copy of the example index."""
    home = tmp_path / "home"
    shutil.copytree(example_index, home)
    return home


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def chroma_server(tmp_path):
    """A real Chroma server (`chroma run`) on 127.0.0.1; yields (host, port)."""
    exe = shutil.which("chroma", path=str(Path(sys.executable).parent)) or shutil.which("chroma")
    if exe is None:
        pytest.fail("the `chroma` command (from the chromadb package) is not installed")
    port = free_port()
    proc = subprocess.Popen([exe, "run", "--path", str(tmp_path / "chroma-server"), "--host", "127.0.0.1",
                             "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail("chroma run did not start within 30 s")
    try:
        yield "127.0.0.1", port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
