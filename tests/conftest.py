"""Shared fixtures: settings pointing at a scratch home, an index of the example article, a real Chroma
server (``chroma run``) for server-mode tests."""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from newsdesk.index.settings import Settings

from tests.support import EXAMPLE_DIR, ROOT, SEED_QUESTIONS, XQUAD, ChromaServer, clean_env, free_port  # noqa: F401

EXAMPLE = EXAMPLE_DIR / "karabakh-2020-09-28.txt"
NEWSDESK = [sys.executable, "-m", "newsdesk.bot.cli"]


# what the tests of LLM mode run with: the fake OpenAI-compatible server, short timeouts
LLM_SETTINGS = {"openai_api_key": "sk-test-secret", "llm_model": "fake-model", "llm_timeout": 5.0,
                "llm_max_attempts": 4, "llm_max_seconds": 20.0}


def llm_settings(base_url: str, home: Path | None = None, **overrides) -> Settings:
    """Settings for LLM mode against the fake server at ``base_url`` (``home``: a scratch home, or none)."""
    values = {**LLM_SETTINGS, "openai_base_url": base_url, **overrides}
    return make_settings(home, **values) if home is not None else Settings(**values)


def copy_of_example(example_index: Path, tmp_path_factory, name: str) -> Path:
    """A copy of the example index for the tests of one module that do not write to it."""
    dest = tmp_path_factory.mktemp(name) / "home"
    shutil.copytree(example_index, dest)
    return dest


@pytest.fixture
def fake():
    """The fake OpenAI-compatible server on 127.0.0.1."""
    from tests.fake_openai import FakeOpenAI

    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def fast_backoff(monkeypatch):
    from newsdesk.bot import llm

    monkeypatch.setattr(llm, "BACKOFF_BASE", 0.05)
    monkeypatch.setattr(llm, "BACKOFF_MAX", 0.2)


def make_settings(home: Path, **overrides) -> Settings:
    """Settings for a test: nothing from the developer's environment or .env, a scratch home."""
    base = Settings.load(environ={"NEWSDESK_HOME": str(home)}, env_file=None)
    return replace(base, **overrides)


def run_cli(*args: str, home: Path | None = None, env: dict | None = None, timeout: float = 300,
            check: bool = False) -> subprocess.CompletedProcess:
    """Run the real `newsdesk` command in a subprocess with a clean environment."""
    full_env = clean_env(home, **(env or {}))
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


@pytest.fixture
def chroma_server(tmp_path):
    """A real Chroma server (`chroma run`) on 127.0.0.1; yields (host, port)."""
    try:
        server = ChromaServer(tmp_path / "chroma-server", startup_timeout=30).__enter__()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    try:
        yield server.host, server.port
    finally:
        server.stop()
