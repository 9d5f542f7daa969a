"""Several processes on one home: a real `newsdesk bot` process (against the fake Bot API) and real `newsdesk index`
processes, on the embedded store and on a `chroma run` server; and a damaged ``chroma.sqlite3``."""

from __future__ import annotations

import contextlib
import fcntl
import html
import json
import os
import re
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import EXAMPLE_DIR, NEWSDESK, clean_env, run_cli
from tests.fake_telegram import FakeTelegram
from tests.support import stop

GREENHOUSE = ("Reykjavik opens a lunar greenhouse\n\n"
              "The city of Reykjavik opened a lunar greenhouse on Monday, growing potatoes under artificial "
              "moonlight in a converted fish factory. The mayor said the greenhouse would feed two hundred "
              "families through the winter.\n")
GREENHOUSE_QUESTION = "How many families will the lunar greenhouse in Reykjavik feed?"
GREENHOUSE_ANSWER = "two hundred families"
WEAPONS = "What weapons did each side allege?"
SETTLE = 10.0  # seconds after an index run ends within which a running bot answers from what it wrote


def _plain(text: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", text))


def _folder(root: Path, name: str, articles: dict[str, str]) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    for file, text in articles.items():
        (folder / file).write_text(text, encoding="utf-8")
    return folder


def _articles(prefix: str, n: int) -> dict[str, str]:
    """``n`` distinct small articles (a few passages each, so that stage 2 has work to do)."""
    towns = ["Tromso", "Bergen", "Oulu", "Turku", "Umea", "Lulea", "Kiruna", "Bodo", "Narvik", "Alta"]
    out = {}
    for i in range(n):
        town = f"{towns[i % len(towns)]}-{prefix}{i}"
        paragraphs = [f"{town} builds a harbour crane number {i}"] + [
            f"Paragraph {j} about {town}: the council of {town} voted {j + i} times on the crane, and the "
            f"harbour master of {town} said the crane would lift {100 + 7 * i + j} containers a day once the "
            f"works on pier {j} end in the spring of year {2030 + j}." for j in range(6)]
        out[f"{prefix}{i:02d}.txt"] = "\n\n".join(paragraphs) + "\n"
    return out


class BotProcess:
    """`newsdesk bot` as a process on ``home``, against the fake Bot API; ``ask`` sends a message in chat 1
    and returns the reply's plain text."""

    def __init__(self, home: Path, tg: FakeTelegram, env: dict | None = None) -> None:
        self.tg, self.asked = tg, 0
        environ = clean_env(home, TELEGRAM_BOT_TOKEN=tg.token, TELEGRAM_API_BASE_URL=tg.base_url,
                            NEWSDESK_RATE_LIMIT_PER_MINUTE="0", **(env or {}))
        self.proc = subprocess.Popen([*NEWSDESK, "bot"], env=environ, cwd=home.parent, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        tg.wait(lambda: tg.calls_of("setMyCommands") or self.proc.poll() is not None, timeout=60)
        assert self.proc.poll() is None, self.proc.stderr.read()[-3000:]

    def ask(self, text: str) -> str:
        self.asked += 1
        self.tg.message(1, text)
        return _plain(self.tg.wait_messages(1, self.asked, timeout=60)[self.asked - 1]["text"])

    def stop(self) -> str:
        stop(self.proc)
        return self.proc.stderr.read()


def _index_process(home: Path, *sources: Path, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([*NEWSDESK, "index", *map(str, sources)], env=clean_env(home, **(env or {})),
                            cwd=home.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _bot_follows_another_process(home: Path, tmp_path: Path, env: dict | None = None) -> None:
    """Ask the running bot before, during and after an index run of another process: never an error reply, and
    the new article's answer within SETTLE s of the run's end."""
    new = _folder(tmp_path, "new", {"reykjavik.txt": GREENHOUSE})
    with FakeTelegram() as tg:
        bot = BotProcess(home, tg, env)
        try:
            assert "Sorry" not in bot.ask(WEAPONS)
            replies = []
            indexing = _index_process(home, new, env=env)
            while indexing.poll() is None:
                replies.append((time.monotonic(), bot.ask(GREENHOUSE_QUESTION)))
            ended = time.monotonic()
            out, err = indexing.communicate()
            assert indexing.returncode == 0, err[-3000:]
            answered = None
            while time.monotonic() < ended + SETTLE + 5:
                at, reply = time.monotonic(), bot.ask(GREENHOUSE_QUESTION)
                replies.append((at, reply))
                if answered is None and GREENHOUSE_ANSWER in reply:
                    answered = at
                time.sleep(0.3)
            assert "Sorry" not in bot.ask(WEAPONS)
        finally:
            log = bot.stop()
    errors = [reply for _, reply in replies if "Sorry" in reply]
    assert not errors, f"{len(errors)} error replies, e.g. {errors[0]!r}\n{log[-3000:]}"
    assert answered is not None and answered - ended < SETTLE, \
        f"the bot did not answer from the new article within {SETTLE:.0f} s: {replies[-1][1][:300]!r}"
    assert GREENHOUSE_ANSWER in replies[-1][1]
    print(f"first answer from the new article {answered - ended:+.1f} s after the index run ended; "
          f"{len(replies)} replies, none an error")


@pytest.mark.slow
def test_running_bot_answers_from_an_index_run_of_another_process(example_home, tmp_path):
    _bot_follows_another_process(example_home, tmp_path)


@pytest.mark.slow
def test_running_bot_answers_from_an_index_run_of_another_process_with_a_server(chroma_server, tmp_path):
    host, port = chroma_server
    env = {"CHROMA_HOST": host, "CHROMA_PORT": str(port)}
    home = tmp_path / "home"
    run_cli("index", str(EXAMPLE_DIR), home=home, env=env, check=True)
    _bot_follows_another_process(home, tmp_path, env)


def _write_lock_held(home: Path) -> bool:
    path = home / "write.lock"
    if not path.exists():
        return False
    with open(path, "rb") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


def _index_state(home: Path) -> tuple[dict, list, list]:
    """(stats, the articles, every passage) of a home."""
    stats = json.loads(run_cli("stats", "--json", home=home, check=True).stdout)
    articles = json.loads(run_cli("list", "--json", home=home, check=True).stdout)
    return stats, articles, sorted(_passages(home))


def _passages(home: Path) -> list[tuple[str, str, bool, bool]]:
    """(article, text, whether its stage-1 vector reads, whether its stage-2 vector reads) of every passage."""
    from newsdesk.index.service import Index
    from tests.conftest import make_settings

    index = Index(make_settings(home))
    try:
        passages = [p for p, _ in index.store.iter_passages()]
        ids = [p.chunk_id for p in passages]
        vectors, accurate = index.store.get_passage_vectors(ids), index.store.get_accurate_vectors(ids)
        return [(p.article_id, p.text, p.chunk_id in vectors, p.chunk_id in accurate) for p in passages]
    finally:
        index.close()


@pytest.mark.slow
def test_two_index_runs_on_one_home_one_waits_and_the_index_is_clean(tmp_path):
    first, second = _folder(tmp_path, "a", _articles("a", 12)), _folder(tmp_path, "b", _articles("b", 12))
    home = tmp_path / "home"
    one = _index_process(home, first)
    deadline = time.monotonic() + 60
    while not _write_lock_held(home) and one.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    two = _index_process(home, second)
    out1, err1 = one.communicate(timeout=120)
    out2, err2 = two.communicate(timeout=120)
    assert one.returncode == 0 and two.returncode == 0, err1[-2000:] + err2[-2000:]
    assert "waiting for another newsdesk process writing to" in err2
    assert err2.count("waiting for another newsdesk process") == 1
    assert "12 added" in out1 and "12 added" in out2

    fresh = tmp_path / "fresh"
    run_cli("index", str(first), str(second), home=fresh, check=True)
    stats, articles, passages = _index_state(home)
    fresh_stats, fresh_articles, fresh_passages = _index_state(fresh)
    assert len(passages) == len(set(passages)), "duplicate passages"
    assert passages == fresh_passages
    assert [a["id"] for a in articles] == [a["id"] for a in fresh_articles]
    assert stats["chunks"] == fresh_stats["chunks"] and stats["accurate"] == fresh_stats["accurate"]
    assert stats["accurate"]["pending"] == 0


# -- a damaged chroma.sqlite3 ---------------------------------------------------------------------------------

def _truncate(db: Path) -> None:
    os.truncate(db, db.stat().st_size // 3)


def _garbage_header(db: Path) -> None:
    with open(db, "r+b") as f:
        f.write(os.urandom(4096))


def _garbage_inside(db: Path) -> None:
    """The header intact, random bytes over the page of Chroma's ``migrations`` table: its core panics when it
    opens the store."""
    with contextlib.closing(sqlite3.connect(db)) as con:
        page_size = con.execute("PRAGMA page_size").fetchone()[0]
        root = con.execute("SELECT rootpage FROM sqlite_master WHERE name = 'migrations'").fetchone()[0]
    with open(db, "r+b") as f:
        f.seek((root - 1) * page_size)
        f.write(os.urandom(page_size))


def _empty(db: Path) -> None:
    os.truncate(db, 0)


DAMAGE = {"truncated": _truncate, "garbage header": _garbage_header, "garbage inside": _garbage_inside,
          "empty": _empty}
RECOVERY = "run `newsdesk index --rebuild PATH…` to move it aside and build the index afresh"


def _damage(home: Path, how: str) -> None:
    db = home / "chroma" / "chroma.sqlite3"
    with contextlib.suppress(FileNotFoundError):
        (home / "chroma" / "chroma.sqlite3-wal").unlink()
    DAMAGE[how](db)


@pytest.mark.parametrize("how", sorted(DAMAGE))
def test_damaged_database_is_a_one_line_error_naming_the_recovery_and_rebuild_recovers(example_home, how):
    _damage(example_home, how)
    for command in (["stats"], ["list"], ["search", "weapons"], ["ask", WEAPONS], ["index", str(EXAMPLE_DIR)]):
        proc = run_cli(*command, home=example_home)
        assert proc.returncode == 1, (command, proc.stdout, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "is damaged" in lines[0] and RECOVERY in lines[0], (command, proc.stderr)

    rebuilt = run_cli("index", "--rebuild", str(EXAMPLE_DIR), home=example_home)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "1 added" in rebuilt.stdout and "moved it to" in rebuilt.stderr
    assert len(list(example_home.glob("chroma.damaged-*"))) == 1
    hits = json.loads(run_cli("search", WEAPONS, "--json", home=example_home, check=True).stdout)["hits"]
    assert hits and hits[0]["article_id"].startswith("karabakh")


@pytest.mark.slow
def test_damaged_database_never_shows_a_rust_backtrace(example_home):
    """The real process: Chroma's core prints its panic straight to the standard error of the process."""
    _damage(example_home, "garbage inside")
    proc = subprocess.run([*NEWSDESK, "stats"], env=clean_env(example_home), cwd=example_home.parent,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and RECOVERY in proc.stderr, proc.stderr


def test_background_fill_skips_its_round_while_another_process_writes(example_home, tmp_path):
    """The bot's stage-2 fill (``wait=False``) does nothing while the writer lock is held elsewhere (here by
    another open file, as another process would), and fills once it is free."""
    from newsdesk.index.service import Index
    from tests.conftest import make_settings

    run_cli("index", "--fast", str(_folder(tmp_path, "new", {"reykjavik.txt": GREENHOUSE})), home=example_home,
            check=True)
    index = Index(make_settings(example_home))
    try:
        with open(example_home / "write.lock", "rb") as other:
            fcntl.flock(other, fcntl.LOCK_EX)
            assert index.fill_accurate(limit=32, wait=False) == 0
        assert index.fill_accurate(limit=32, wait=False) == 1
        assert index.stats()["accurate"]["pending"] == 0
    finally:
        index.close()
