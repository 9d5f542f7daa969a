"""The `newsdesk` command's own behaviour (not the answers): version, argument checks, logging, errors, the chat
commands, Ctrl-C, a closed pipe. In-process (``main(argv)``) except where the process itself is under test."""

from __future__ import annotations

import io
import logging
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import pytest

from newsdesk.bot.cli import main
from tests.conftest import NEWSDESK, copy_of_example
from tests.fake_openai import Sleep
from tests.support import clean_env

SPOKESPERSON_Q = "Who is the spokesperson of the Armenian Ministry of Defense?"
NOTHING_INDEXED = "No articles are indexed yet: run `newsdesk index PATH`."
HELP_LINE = "/sources   the passages behind the last answer"


@pytest.fixture(scope="module")
def home(example_index, tmp_path_factory) -> Path:
    return copy_of_example(example_index, tmp_path_factory, "cli")


@pytest.fixture(autouse=True)
def clean(monkeypatch, tmp_path):
    """Nothing from the developer's environment or .env; the root logger's level as it was."""
    for name in list(os.environ):
        if name.startswith(("NEWSDESK_", "OPENAI_", "CHROMA_", "TELEGRAM_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    level = logging.getLogger().level
    yield
    logging.getLogger().setLevel(level)


def run(capsys, *args: str) -> tuple[int, str, str]:
    """``newsdesk ARGS`` in this process: (exit status, stdout, stderr)."""
    capsys.readouterr()
    status = main(list(args))
    out, err = capsys.readouterr()
    return status, out, err


def chat_in_process(capsys, monkeypatch, home: Path, lines: list[str]) -> tuple[int, str, str]:
    monkeypatch.setattr("sys.stdin", io.StringIO("".join(f"{line}\n" for line in lines)))
    return run(capsys, "--home", str(home), "chat")


# ---- version, arguments ------------------------------------------------------------------------------------

def test_version(capsys):
    assert run(capsys, "--version") == (0, f"newsdesk {metadata.version('newsdesk')}\n", "")


def test_version_of_the_console_script():
    proc = subprocess.run([str(Path(sys.executable).parent / "newsdesk"), "--version"], capture_output=True,
                          text=True, env=clean_env(), timeout=60)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, f"newsdesk {metadata.version('newsdesk')}\n", "")


@pytest.mark.parametrize("question", ["", "   ", "\t \n"])
def test_empty_question_is_a_one_line_error(capsys, tmp_path, question):
    status, out, err = run(capsys, "--home", str(tmp_path / "home"), "ask", question)
    assert (status, out, err) == (1, "", "newsdesk: error: the question is empty\n")
    status, out, err = run(capsys, "--home", str(tmp_path / "home"), "search", question)
    assert (status, out, err) == (1, "", "newsdesk: error: the query is empty\n")


@pytest.mark.parametrize("command", [["search", "q"], ["ask", "q"], ["eval", "questions.jsonl"]])
@pytest.mark.parametrize("k", ["0", "-1", "1.5", "five"])
def test_k_is_a_whole_number_of_at_least_one_on_every_command(capsys, tmp_path, command, k):
    status, out, err = run(capsys, "--home", str(tmp_path / "home"), *command, "--k", k)
    assert status == 2 and out == ""  # a command line that does not parse: argparse's usage and exit status
    assert err.splitlines()[-1] == (f"newsdesk {command[0]}: error: argument --k: expected a whole number of "
                                    f"at least 1, not {k!r}")


def test_home_before_or_after_the_command(capsys, home, tmp_path):
    before = run(capsys, "--home", str(home), "stats", "--json")
    after = run(capsys, "stats", "--home", str(home), "--json")
    assert before == after and before[0] == 0 and '"articles": 1' in before[1]
    # given twice, the one after the command wins (argparse's rule: the later option)
    assert run(capsys, "--home", str(tmp_path / "elsewhere"), "stats", "--home", str(home), "--json") == before


# ---- logging -----------------------------------------------------------------------------------------------

def test_log_level_from_the_environment_and_v(capsys, home, monkeypatch):
    version = metadata.version("newsdesk")
    started = f"INFO newsdesk: newsdesk {version}: list, embedded chroma at {home}"

    status, out, err = run(capsys, "--home", str(home), "list")
    assert status == 0 and err == ""  # WARNING by default: nothing to say
    err = run(capsys, "--home", str(home), "-v", "list")[2]
    assert err.count(started) == 1 and " DEBUG " not in err
    err = run(capsys, "--home", str(home), "list", "-v")[2]  # again in this process: still one handler
    assert err.count(started) == 1 and err.count("\n") == 1
    err = run(capsys, "list", "-vv", "--home", str(home))[2]
    assert "DEBUG newsdesk: settings: Settings(" in err

    monkeypatch.setenv("NEWSDESK_LOG_LEVEL", "debug")
    err = run(capsys, "--home", str(home), "list")[2]
    assert started in err and "DEBUG newsdesk: settings: Settings(" in err
    assert logging.getLogger("httpx").getEffectiveLevel() == logging.WARNING  # it logs URLs with the bot token
    assert logging.getLogger("httpcore").getEffectiveLevel() == logging.WARNING
    monkeypatch.setenv("NEWSDESK_LOG_LEVEL", "ERROR")
    assert run(capsys, "--home", str(home), "-v", "list")[2].count(started) == 1  # -v only ever means more

    monkeypatch.setenv("NEWSDESK_LOG_LEVEL", "LOUD")
    assert run(capsys, "--home", str(home), "list") == (
        1, "", "newsdesk: error: NEWSDESK_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, not 'LOUD'\n")


# ---- errors ------------------------------------------------------------------------------------------------

def test_unexpected_error_is_one_line_with_the_traceback_under_v(capsys, home, monkeypatch):
    # a terminal that cannot show the Arabic title: nothing newsdesk maps to one of its errors
    monkeypatch.setattr("sys.stdout", io.TextIOWrapper(io.BytesIO(), encoding="ascii"))
    status, _, err = run(capsys, "--home", str(home), "list")
    assert status == 1
    assert err == "newsdesk: error: unexpected UnicodeEncodeError in `newsdesk list`; run with -v for details\n"
    status, _, err = run(capsys, "--home", str(home), "list", "-v")
    assert status == 1 and "Traceback (most recent call last)" in err and "UnicodeEncodeError: 'ascii'" in err
    assert err.splitlines()[-1] == ("newsdesk: error: unexpected UnicodeEncodeError in `newsdesk list`; "
                                    "the traceback is above")


def test_ask_on_an_empty_index_says_how_to_fill_it(capsys, tmp_path):
    status, out, err = run(capsys, "--home", str(tmp_path / "empty"), "ask", SPOKESPERSON_Q)
    assert (status, out, err) == (0, NOTHING_INDEXED + "\n", "")


# ---- chat --------------------------------------------------------------------------------------------------

def test_chat_lines_starting_with_a_slash_are_commands(capsys, monkeypatch, home):
    status, out, err = chat_in_process(capsys, monkeypatch, home, [
        "/help", "/sources", "/frobnicate now", "/new", "/HELP", "/exit", SPOKESPERSON_Q])
    assert (status, err) == (0, "")
    banner, help_, sources, unknown, new, help_again, end = re.split(r"(?m)^> ", out)
    assert banner.startswith("Ask about the indexed articles.") and HELP_LINE in help_
    assert sources == "No sources yet.\n"
    assert unknown == "Unknown command /frobnicate: try /help.\n"
    assert new == "Starting a new conversation.\n" and HELP_LINE in help_again
    assert end == "" and "Offline answer" not in out  # no line was taken for a question; /exit left

    status, out, _ = chat_in_process(capsys, monkeypatch, home, ["/quit", SPOKESPERSON_Q])
    assert status == 0 and "Offline answer" not in out


def test_chat_follow_ups_expire(capsys, monkeypatch, home):
    """The terminal's conversation keeps its turns for NEWSDESK_HISTORY_TTL_SECONDS, like the bot's."""
    follow_up = "and where did she publish her statement?"

    def second_answer() -> str:
        out = chat_in_process(capsys, monkeypatch, home, [SPOKESPERSON_Q, follow_up])[1]
        return re.split(r"(?m)^> ", out)[2]

    kept = second_answer()
    monkeypatch.setenv("NEWSDESK_HISTORY_TTL_SECONDS", "0")
    expired = second_answer()
    assert "صفحتها في فيسبوك" in kept  # read with the previous question
    assert expired != kept


# ---- the process itself ------------------------------------------------------------------------------------

def _chat_process(home: Path, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([*NEWSDESK, "chat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=clean_env(home, **(env or {})),
                            cwd=home.parent)


def _wait_for(condition, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.slow
def test_ctrl_c_cancels_the_question_being_answered(home, fake):
    fake.default = Sleep(60)  # the language model never answers in time
    proc = _chat_process(home, {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": fake.base_url,
                                "NEWSDESK_LLM_MODEL": "fake-model"})
    try:
        proc.stdin.write(f"{SPOKESPERSON_Q}\n")
        proc.stdin.flush()
        _wait_for(lambda: fake.chat_requests)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate("/help\n", timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and err == ""
    _, cancelled, help_, end = re.split(r"(?m)^> ", out)
    assert cancelled == "(cancelled)\n" and HELP_LINE in help_ and end == "\n"  # then back at the prompt


@pytest.mark.slow
def test_ctrl_c_at_the_prompt_quits_cleanly(home):
    proc = _chat_process(home)
    try:
        assert proc.stdout.readline().startswith("Ask about the indexed articles.")
        assert proc.stdout.read(2) == "> "  # waiting for a question
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert (proc.returncode, out, err) == (0, "\n", "")


def _read_until(fd: int, pattern: str, timeout: float = 30) -> str:
    """Read the terminal's output until ``pattern`` appears (or the timeout)."""
    seen = b""
    deadline = time.monotonic() + timeout
    while pattern.encode() not in seen:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"timed out waiting for {pattern!r}; got {seen.decode(errors='replace')!r}"
        if select.select([fd], [], [], remaining)[0]:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # the other side closed
                break
            if not chunk:
                break
            seen += chunk
    return seen.decode(errors="replace")


@pytest.mark.slow
def test_chat_in_a_terminal_has_line_editing_and_history(home):
    """Under a real terminal (a pty): the up arrow brings back the last line, Ctrl-A goes to its start."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([*NEWSDESK, "chat"], stdin=slave, stdout=slave, stderr=slave,
                            env=clean_env(home, TERM="xterm"), cwd=home.parent, start_new_session=True)
    os.close(slave)
    try:
        _read_until(master, "> ")
        os.write(master, b"help\x01/\r")  # typed "help", Ctrl-A, "/": the line is "/help"
        _read_until(master, HELP_LINE)
        os.write(master, b"\x1b[A\r")  # up arrow: "/help" again
        out = _read_until(master, HELP_LINE)
        os.write(master, b"/quit\r")
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    assert "Offline answer" not in out and "Unknown command" not in out


@pytest.mark.slow
@pytest.mark.parametrize("command", [["list"], ["search", "army"]])
def test_closed_pipe_exits_quietly(home, command):
    """`newsdesk list | head -0`: the reader is gone before anything is written."""
    proc = subprocess.Popen([*NEWSDESK, *command], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=clean_env(home), cwd=home.parent)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert (proc.wait(timeout=60), err) == (141, "")


@pytest.mark.slow
def test_ask_at_a_terminal_says_the_model_is_writing(home, fake):
    """A local model takes a minute or two: at a terminal, `ask` says what it is waiting for before the answer
    (on standard error); piped, nothing but the answer is printed."""
    fake.default = Sleep(1.0)  # then an unanswerable reply
    env = {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": fake.base_url, "NEWSDESK_LLM_MODEL": "fake-model"}
    master, slave = pty.openpty()
    proc = subprocess.Popen([*NEWSDESK, "ask", SPOKESPERSON_Q], stdin=subprocess.DEVNULL, stdout=slave,
                            stderr=slave, env=clean_env(home, **env), cwd=home.parent, start_new_session=True)
    os.close(slave)
    try:
        out = _read_until(master, "don't answer")
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    assert f"Asking fake-model at {fake.base_url}" in out
    assert out.index("Asking fake-model") < out.index("don't answer")
    piped = subprocess.run([*NEWSDESK, "ask", SPOKESPERSON_Q], capture_output=True, text=True,
                           env=clean_env(home, **env), cwd=home.parent, timeout=60)
    assert piped.returncode == 0 and "Asking" not in piped.stderr + piped.stdout
