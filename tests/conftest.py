"""Shared fixtures: settings pointing at a scratch home, an index of the example article, a real Chroma
server (``chroma run``) for server-mode tests; the `newsdesk` command run in-process (``run_cli``, the
everyday way: no 2-5 s of imports and model loading per command) or as a process (``run_cli_process``)."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import sys
import traceback
from dataclasses import replace
from pathlib import Path

import pytest

from newsdesk.index.settings import Settings

from tests.support import EXAMPLE_DIR, ROOT, SEED_QUESTIONS, XQUAD, ChromaServer, clean_env, free_port  # noqa: F401

EXAMPLE = EXAMPLE_DIR / "karabakh-2020-09-28.txt"
NEWSDESK = [sys.executable, "-m", "newsdesk.bot.cli"]
CONSOLE_SCRIPT = Path(sys.executable).parent / "newsdesk"  # what `pip install` put next to python


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


def run_cli(*args: str, home: Path | None = None, env: dict | None = None, input: str | None = None,
            timeout: float = 300, check: bool = False) -> subprocess.CompletedProcess:
    """Run the `newsdesk` command in this process, as a user's shell would run it: ``main(argv)`` with the
    environment ``clean_env`` builds (``os.environ`` replaced for the call), the working directory the
    subprocess had (``home.parent``), standard input ``input`` (none: end of input), standard output and error
    captured. Returns what ``subprocess.run`` would: the exit status (argparse's ``SystemExit`` included), the
    two outputs (``main`` turns a bug into a one-line error, as for a user; anything else it lets out fails
    the test with its traceback).
    ``timeout`` is the subprocess runner's; here pytest-timeout bounds the call. What a process would drop at
    exit, the embedded Chroma systems the command opened, is released after the call."""
    from newsdesk.bot import cli

    out, err = io.StringIO(), io.StringIO()
    with _process_like(clean_env(home, **(env or {})), home.parent if home is not None else None, input):
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                status = cli.main(list(args))
            except SystemExit as exc:
                status = _exit_status(exc, err)
    proc = subprocess.CompletedProcess(["newsdesk", *args], status, out.getvalue(), err.getvalue())
    if check and proc.returncode != 0:
        raise AssertionError(f"newsdesk {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def run_cli_process(*args: str, home: Path | None = None, env: dict | None = None, input: str | None = None,
                    timeout: float = 300, check: bool = False, command: list[str] | None = None
                    ) -> subprocess.CompletedProcess:
    """Run the real `newsdesk` command (``command``: default ``python -m newsdesk.bot.cli``) in a subprocess
    with a clean environment: for the tests where the process itself is under test (another process's
    changes, signals, the console script)."""
    full_env = clean_env(home, **(env or {}))
    proc = subprocess.run([*(command or NEWSDESK), *args], capture_output=True, text=True, env=full_env,
                          timeout=timeout, input=input, cwd=home.parent if home is not None else None)
    if check and proc.returncode != 0:
        raise AssertionError(f"newsdesk {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def run_python(code: str, environ: dict, cwd: Path) -> subprocess.CompletedProcess:
    """Run ``code`` as ``python -c CODE`` would, with exactly ``environ`` and in ``cwd``, but in this process
    (no second start-up of the libraries): the exit status (1 and the traceback on standard error for an
    exception), the two outputs; the embedded Chroma systems it opened are released, as at a process's exit."""
    out, err = io.StringIO(), io.StringIO()
    with _process_like(environ, cwd, None):
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                exec(compile(code, "<string>", "exec"), {"__name__": "__main__"})
                status = 0
            except SystemExit as exc:
                status = _exit_status(exc, err)
            except Exception:  # noqa: BLE001 - what the interpreter does with it: a traceback, status 1
                traceback.print_exc(file=err)
                status = 1
    return subprocess.CompletedProcess(["python", "-c", code], status, out.getvalue(), err.getvalue())


def _exit_status(exc: SystemExit, stderr: io.StringIO) -> int:
    """The status a process exiting with ``exc`` has (a message is printed to standard error, status 1)."""
    if exc.code is None or isinstance(exc.code, int):
        return exc.code or 0
    print(exc.code, file=stderr)
    return 1


@contextlib.contextmanager
def _process_like(environ: dict, cwd: Path | None, stdin: str | None):
    """For the duration of the block: exactly ``environ`` as the process environment, ``cwd`` as the working
    directory, ``stdin`` as standard input; afterwards everything as it was, and the embedded Chroma systems
    opened inside the block stopped (a process exiting would drop them; a later command, or another process,
    then reads the store afresh)."""
    from chromadb.api.shared_system_client import SharedSystemClient

    saved_env, saved_cwd, saved_stdin = dict(os.environ), os.getcwd(), sys.stdin
    systems = set(SharedSystemClient._identifier_to_system)
    os.environ.clear()
    os.environ.update(environ)
    sys.stdin = io.StringIO(stdin or "")
    try:
        if cwd is not None:
            os.chdir(cwd)
        yield
    finally:
        os.chdir(saved_cwd)
        sys.stdin = saved_stdin
        os.environ.clear()
        os.environ.update(saved_env)
        for identifier in set(SharedSystemClient._identifier_to_system) - systems:
            SharedSystemClient._identifier_to_refcount.pop(identifier, None)
            SharedSystemClient._identifier_to_system.pop(identifier).stop()


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
