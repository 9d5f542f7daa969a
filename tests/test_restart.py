"""Issue 17: a restart of the bot forgets nothing a user can see. A real `newsdesk bot` process answers a question
against the fake Bot API (tests/fake_telegram.py) and is stopped; a second process on the same home then shows
the passage behind a source button of the first one's answer, reads a follow-up with the question asked before
the restart, and records a vote on that answer, with the answer's details, in <home>/feedback.jsonl."""

from __future__ import annotations

import html
import json
import re
import signal
import subprocess

import pytest

from tests.conftest import EXAMPLE, NEWSDESK, clean_env
from tests.fake_telegram import FakeTelegram

ARTICLE = EXAMPLE.read_text(encoding="utf-8")
SPOKESPERSON = "Who is the spokesperson of the Armenian Ministry of Defense?"
FOLLOW_UP = "and where did she publish her statement?"
USER = 7  # a private chat: its id is the user's


def plain(text: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", text))


def buttons(message: dict) -> list[str]:
    return [b["callback_data"] for row in message["reply_markup"]["inline_keyboard"] for b in row]


class Bot:
    """One `newsdesk bot` process on ``home``, up once it has set its commands; stopped with SIGTERM."""

    def __init__(self, home, tg: FakeTelegram) -> None:
        self.tg, self.up_after = tg, len(tg.calls_of("setMyCommands"))
        env = clean_env(home, TELEGRAM_BOT_TOKEN=tg.token, TELEGRAM_API_BASE_URL=tg.base_url)
        self.proc = subprocess.Popen([*NEWSDESK, "bot"], env=env, cwd=home.parent, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)

    def __enter__(self) -> Bot:
        try:
            self.tg.wait(lambda: self.proc.poll() is not None or len(self.tg.calls_of("setMyCommands")) > self.up_after,
                         timeout=90)
            assert self.proc.poll() is None, self.proc.communicate()[1][-3000:]
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            _, self.err = self.proc.communicate(timeout=20)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.communicate()


def ask(tg: FakeTelegram, chat_id: int, text: str) -> dict:
    before = len(tg.messages(chat_id))
    tg.message(chat_id, text)
    return tg.wait_messages(chat_id, before + 1, timeout=60)[before]


@pytest.mark.slow  # two bot processes, each loading the embedders: ~20 s
def test_a_restarted_bot_keeps_source_buttons_follow_ups_and_votes(example_home):
    with FakeTelegram() as tg:
        with Bot(example_home, tg) as first:
            reply = ask(tg, USER, SPOKESPERSON)
        assert first.proc.returncode == 0, first.err[-3000:]
        data = buttons(reply)
        source = next(d for d in data if d.startswith("src:") and d.endswith(":1"))
        key = source.split(":")[1]
        assert f"v:{key}:+" in data and f"v:{key}:-" in data
        shown_before = plain(reply["text"])

        with Bot(example_home, tg) as second:
            shown = len(tg.messages(USER)) + len(tg.edits(USER))
            tg.callback(USER, source, reply["message"], user_id=USER)
            answered = tg.wait(lambda: [c for c in tg.calls_of("answerCallbackQuery")
                                        if c.params.get("callback_query_id")], timeout=30)
            assert "expired" not in (answered[-1].params.get("text") or "").lower()
            tg.wait(lambda: len(tg.messages(USER)) + len(tg.edits(USER)) > shown, timeout=30)
            passage = plain(next(m for m in reversed(tg.shown(USER)) if m.get("edit_date")
                                 or m["message_id"] > reply["message"]["message_id"])["text"])

            follow_up = ask(tg, USER, FOLLOW_UP)  # read with the question asked before the restart
            alone = ask(tg, USER + 1, FOLLOW_UP)  # the same words in a chat without that history
            assert plain(alone["text"]) != plain(follow_up["text"])

            tg.callback(USER, f"v:{key}:-", reply["message"], user_id=USER)
            path = example_home / "feedback.jsonl"
            tg.wait(lambda: path.exists() and path.read_text(encoding="utf-8").strip(), timeout=30)
        assert second.proc.returncode == 0, second.err[-3000:]

    [vote] = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert (vote["answer_key"], vote["vote"], vote["chat"], vote["user"]) == (key, "down", USER, USER)
    assert vote["question"] == SPOKESPERSON and vote["mode"] == "extractive"
    assert vote["citations"] and all(c["quote"] in ARTICLE for c in vote["citations"])
    quote = vote["citations"][0]["quote"].split(" … ")[0]
    assert all(c["quote"].split(" … ")[0] in shown_before for c in vote["citations"])  # the answer shown then
    assert quote in passage  # the passage behind [1], shown after the restart
    assert vote["retrieved"] and vote["answer"].count("[1]") >= 1
    summary = subprocess.run([*NEWSDESK, "feedback", "--json"], env=clean_env(example_home), cwd=example_home.parent,
                             capture_output=True, text=True, timeout=60)
    assert json.loads(summary.stdout)["summary"]["per_mode"] == {"extractive": {"votes": 1, "up": 0, "down": 1,
                                                                                "up_rate": 0.0}}
