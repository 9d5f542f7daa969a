"""The conversation state both front ends keep (``bot.conversation.Conversations``): follow-up turns, their
expiry, and the answers behind earlier source buttons; kept in a file, it survives a restart, two processes
writing at once, damage, and stays bounded. Time is the ``clock`` the object is given. The bot restarted for
real: tests/test_restart.py."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from newsdesk.bot.answers import Answer, Citation, Piece, Sentence
from newsdesk.bot.conversation import ANSWERS_KEPT, Conversations
from tests.conftest import run_cli

ROOT = Path(__file__).resolve().parent.parent


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def answer(text: str, quotes: tuple[str, ...] = ()) -> Answer:
    citations = [Citation(n=n, article_id="a", title=None, source=None, published=None, url=None, quote=q,
                          start=0, end=len(q)) for n, q in enumerate(quotes, start=1)]
    return Answer(question=text, text=f"answer to {text}", sentences=[], citations=citations, mode="extractive",
                  abstained=False)


def asked(conversations: Conversations, key, *questions: str) -> list[str]:
    return [conversations.remember(key, q, answer(q, (f"quote of {q}",))) for q in questions]


def test_turns_expire_after_the_ttl_without_a_new_question():
    clock = Clock()
    conversations = Conversations(turns=4, ttl_seconds=60, clock=clock)
    asked(conversations, 1, "who?")
    clock.now += 59
    assert [(t.question, t.answer) for t in conversations.history(1)] == [("who?", "answer to who?")]
    asked(conversations, 1, "and where?")  # a new question starts the TTL again
    clock.now += 59
    assert [t.question for t in conversations.history(1)] == ["who?", "and where?"]
    clock.now += 2
    assert conversations.history(1) == []
    asked(conversations, 1, "when?")  # an expired conversation starts over
    assert [t.question for t in conversations.history(1)] == ["when?"]


def test_at_most_the_configured_number_of_turns_and_none_when_zero():
    conversations = Conversations(turns=2, ttl_seconds=60, clock=Clock())
    asked(conversations, 1, *(f"q{i}" for i in range(5)))
    assert [t.question for t in conversations.history(1)] == ["q3", "q4"]
    none = Conversations(turns=0, ttl_seconds=60, clock=Clock())
    key = asked(none, 1, "q")[0]
    assert none.history(1) == [] and none.citation(1, key, 1).quote == "quote of q"  # buttons still work


def test_source_buttons_of_the_last_answers_work_and_older_ones_expire():
    conversations = Conversations(turns=4, ttl_seconds=60, clock=Clock())
    keys = asked(conversations, 1, *(f"q{i}" for i in range(ANSWERS_KEPT + 10)))
    assert len(set(keys)) == len(keys)
    assert conversations.citation(1, keys[-1], 1).quote == f"quote of q{ANSWERS_KEPT + 9}"
    assert conversations.citation(1, keys[-ANSWERS_KEPT], 1).quote == "quote of q10"
    assert conversations.citations(1, keys[-ANSWERS_KEPT - 1]) is None  # the 51st answer back has expired
    assert conversations.citation(1, keys[0], 1) is None
    assert conversations.citation(1, keys[-1], 2) is None  # no such source number
    assert conversations.citation(1, "unknown", 1) is None and conversations.citation(2, keys[-1], 1) is None


def test_reset_forgets_the_turns_and_last_answer_but_keeps_the_buttons():
    conversations = Conversations(turns=4, ttl_seconds=60, clock=Clock())
    key = conversations.remember(1, "who?", answer("who?", ("Shushan Stepanyan", "on Facebook")))
    assert conversations.last(1).question == "who?"
    conversations.reset(1)
    assert conversations.history(1) == [] and conversations.last(1) is None
    assert [c.quote for c in conversations.citations(1, key)] == ["Shushan Stepanyan", "on Facebook"]
    asked(conversations, 1, "and where?")
    assert [t.question for t in conversations.history(1)] == ["and where?"]


def test_concurrent_chats_do_not_mix():
    conversations = Conversations(turns=3, ttl_seconds=60, clock=Clock())
    keys: dict[int, list[str]] = {}
    start = threading.Barrier(8)

    def chat(chat_id: int) -> None:
        start.wait()
        keys[chat_id] = asked(conversations, chat_id, *(f"chat {chat_id} q{i}" for i in range(40)))

    threads = [threading.Thread(target=chat, args=(chat_id,)) for chat_id in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for chat_id in range(8):
        assert [t.question for t in conversations.history(chat_id)] == [f"chat {chat_id} q{i}" for i in (37, 38, 39)]
        assert conversations.last(chat_id).question == f"chat {chat_id} q39"
        assert all(conversations.citation(chat_id, k, 1).quote == f"quote of chat {chat_id} q{i}"
                   for i, k in enumerate(keys[chat_id]))
        other = keys[(chat_id + 1) % 8][-1]
        assert conversations.citations(chat_id, other) is None  # another chat's button


# -- kept in a file: restarts, two processes, damage, bounds ----------------------------------------------------

def full_answer(question: str) -> Answer:
    """An answer with everything a source button and a vote need: passage, chunk id, pieces, retrieved ids."""
    quote = "Shushan Stepanyan … on Facebook"
    citation = Citation(n=1, article_id="karabakh", title="t", source="Sputnik", published="2020-09-28",
                        url=None, quote=quote, start=3, end=40, chunk_id="karabakh#2",
                        passage="the spokesperson Shushan Stepanyan wrote on Facebook",
                        pieces=[Piece(3, 20, "Shushan Stepanyan"), Piece(28, 40, "on Facebook")])
    return Answer(question=question, text=f"She wrote it [1] ({question})", sentences=[Sentence("She wrote it", [1])],
                  citations=[citation], mode="llm", abstained=False, standalone_question=f"{question}?",
                  retrieved=["karabakh#2", "karabakh#5"], proposed=2, accepted=1)


def test_everything_survives_a_restart_and_scopes_do_not_mix(tmp_path):
    path = tmp_path / "home" / "conversations.sqlite3"
    first = Conversations(turns=4, ttl_seconds=60, clock=Clock(), path=path, scope="telegram")
    key = first.remember(7, "who?", full_answer("who?"))
    old = first.remember(7, "where?", full_answer("where?"))
    first.remember(8, "other chat", full_answer("other chat"))
    first.close()  # the process ends

    again = Conversations(turns=4, ttl_seconds=60, clock=Clock(), path=path, scope="telegram")
    assert [(t.question, t.answer) for t in again.history(7)] == [("who?", "She wrote it [1] (who?)"),
                                                                   ("where?", "She wrote it [1] (where?)")]
    assert again.answer(7, key) == full_answer("who?")  # whole: passage, chunk id, pieces, retrieved ids
    assert again.citation(7, old, 1).passage.startswith("the spokesperson")
    assert again.last(7).question == "where?" and again.answer(8, key) is None
    terminal = Conversations(turns=4, ttl_seconds=60, clock=Clock(), path=path, scope="chat")
    assert terminal.history(7) == [] and terminal.answer(7, key) is None  # the bot's chat 7 is not the terminal's
    assert path.stat().st_mode & 0o777 == 0o600


_WRITER = """
import sys, time
from newsdesk.bot.conversation import Conversations
from tests.test_conversation import full_answer
conversations = Conversations(turns=100, ttl_seconds=3600, path=sys.argv[1], scope="s")
keys = [conversations.remember(sys.argv[2], f"q{i}", full_answer(f"q{i}")) for i in range(150)]
print(" ".join(keys))
"""


def test_two_processes_write_one_file_at_once(tmp_path):
    path = tmp_path / "conversations.sqlite3"
    Conversations(turns=4, ttl_seconds=60, path=path)  # created (WAL) before the race, as the bot does
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(path), who], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=ROOT) for who in ("bot", "chat")]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outs]
    reader = Conversations(turns=100, ttl_seconds=3600, path=path, scope="s")
    for who, (out, _) in zip(("bot", "chat"), outs):
        keys = out.split()
        assert [t.question for t in reader.history(who)] == [f"q{i}" for i in range(50, 150)]
        assert [reader.citation(who, k, 1) is not None for k in keys] == [i >= 100 for i in range(150)]  # 50 kept


def test_a_damaged_file_is_one_warning_and_a_fresh_start(tmp_path, caplog):
    path = tmp_path / "conversations.sqlite3"
    conversations = Conversations(turns=4, ttl_seconds=60, path=path)
    for i in range(30):
        conversations.remember(1, f"q{i}", full_answer(f"q{i}"))
    conversations.close()
    data = path.read_bytes()
    for damage in (b"this is not a database at all" * 100, data[:100] + b"\xff" * 4000 + data[4100:]):
        path.write_bytes(damage)
        for suffix in ("-wal", "-shm"):
            path.with_name(path.name + suffix).unlink(missing_ok=True)
        caplog.clear()
        fresh = Conversations(turns=4, ttl_seconds=60, path=path)
        warnings = [r for r in caplog.records if r.levelname == "WARNING"]
        assert len(warnings) == 1 and "damaged" in warnings[0].getMessage(), caplog.text
        assert fresh.history(1) == [] and path.with_name(path.name + ".damaged").read_bytes() == damage
        key = fresh.remember(1, "again", full_answer("again"))
        fresh.close()
        assert Conversations(turns=4, ttl_seconds=60, path=path).citation(1, key, 1) is not None  # a real file


def test_a_file_that_cannot_be_opened_is_one_warning_and_memory(tmp_path, caplog):
    path = tmp_path / "conversations.sqlite3"
    path.mkdir()  # not a file: cannot be opened (whoever runs the test, root too)
    conversations = Conversations(turns=4, ttl_seconds=60, path=path)
    assert len([r for r in caplog.records if r.levelname == "WARNING"]) == 1 and "in memory" in caplog.text
    key = conversations.remember(1, "who?", full_answer("who?"))
    assert conversations.history(1)[0].question == "who?" and conversations.citation(1, key, 1) is not None


def test_the_file_is_bounded_in_age_and_size(tmp_path):
    clock = Clock()
    path = tmp_path / "conversations.sqlite3"
    conversations = Conversations(turns=4, ttl_seconds=60, answers_kept=5, clock=clock, path=path,
                                  max_age_seconds=1000, max_conversations=3, max_answers=8)
    old = conversations.remember("old", "q", full_answer("q"))
    clock.now += 999
    kept = conversations.remember("kept", "q", full_answer("q"))
    clock.now += 2  # "old" is 1001 s old: forgotten, even before the next write
    assert conversations.answer("old", old) is None and conversations.answer("kept", kept) is not None
    for chat in ("a", "b", "c"):  # beyond 3 conversations, the least recently used go
        conversations.remember(chat, "q", full_answer("q"))
    assert conversations.answer("kept", kept) is None and conversations.history("kept") == []
    keys = [conversations.remember("c", f"q{i}", full_answer(f"q{i}")) for i in range(20)]
    assert [conversations.answer("c", k) is not None for k in keys] == [i >= 15 for i in range(20)]
    db = sqlite3.connect(path)
    assert db.execute("SELECT count(*) FROM answers").fetchone()[0] <= 8
    assert db.execute("SELECT count(*) FROM conversations").fetchone()[0] <= 3
    db.close()
    for i in range(1000):
        conversations.remember(f"chat{i % 7}", f"q{i}", full_answer(f"q{i}"))
    assert path.stat().st_size < 100_000  # 8 answers, 3 conversations
    assert path.with_name(path.name + "-wal").stat().st_size < 1_500_000  # checkpointed, cut back to ~1 MB


@pytest.mark.slow  # five `newsdesk chat` runs, four questions: ~4 s
def test_chat_resume_continues_the_conversation_of_an_earlier_process(example_home):
    """`newsdesk chat` starts blank, as a terminal does; `chat --resume` continues where the last one ended."""
    question, follow_up = "Who is the spokesperson of the Armenian Ministry of Defense?", "and where did she publish?"
    first = run_cli("chat", home=example_home, input=f"{question}\n", check=True)
    assert "Sources:\n[1] " in first.stdout
    blank = run_cli("chat", home=example_home, input=f"/sources\n{follow_up}\n", check=True).stdout
    assert "No sources yet." in blank and "Continuing" not in blank
    run_cli("chat", home=example_home, input=f"{question}\n", check=True)
    resumed = run_cli("chat", "--resume", home=example_home, input=f"/sources\n{follow_up}\n", check=True).stdout
    assert "Continuing the conversation (1 earlier question(s)); /new starts a new one." in resumed
    assert resumed.split("> ")[1].startswith("[1]")  # /sources: the passages of the answer before
    assert resumed.split("> ")[2] != blank.split("> ")[2]  # the follow-up is read with the earlier question
    assert "No recent conversation" in run_cli("chat", "--resume", home=example_home, input="/new\n/quit\n",
                                               env={"NEWSDESK_HISTORY_TTL_SECONDS": "0"}, check=True).stdout
