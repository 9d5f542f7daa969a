"""The conversation state both front ends keep (``bot.conversation.Conversations``): follow-up turns, their
expiry, and the citations behind earlier answers' source buttons. Time is the ``clock`` the object is given."""

from __future__ import annotations

import threading

from newsdesk.bot.answers import Answer, Citation
from newsdesk.bot.conversation import ANSWERS_KEPT, Conversations


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
