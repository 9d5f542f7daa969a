"""Conversation state, one module for both front ends (``newsdesk chat`` and the Telegram bot).

Per conversation (a Telegram chat, or the one terminal session of ``newsdesk chat``) it keeps:

- the recent turns (question and answer text), which the engine reads follow-up questions against; they
  expire after ``ttl_seconds`` without a new question, and at most ``turns`` are kept (0: no follow-ups);
- the citations behind the answers' source buttons, under a short random key per answer, for the last
  ``answers_kept`` answers of the conversation (an older button says the answer has expired);
- the last answer, for ``/sources``.

Nothing here talks to the index, the store or the model: front ends ask the engine, then record the result.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

from .answers import Answer, Citation, Turn

ANSWERS_KEPT = 50  # answers whose source buttons still work, per conversation
MAX_CONVERSATIONS = 10_000  # the least recently used conversations are forgotten beyond this


@dataclass
class _State:
    turns: list[Turn] = field(default_factory=list)
    turn_at: float = 0.0
    answers: OrderedDict[str, list[Citation]] = field(default_factory=OrderedDict)
    last: Answer | None = None


class Conversations:
    """The state of every conversation, keyed by an id (a Telegram chat id; 0 for the terminal)."""

    def __init__(self, turns: int, ttl_seconds: float, answers_kept: int = ANSWERS_KEPT,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.turns, self.ttl_seconds, self.answers_kept = turns, ttl_seconds, answers_kept
        self._clock = clock
        self._states: OrderedDict[Hashable, _State] = OrderedDict()
        self._lock = threading.Lock()  # the bot handles updates concurrently

    def _state(self, key: Hashable) -> _State:
        state = self._states.get(key)
        if state is None:
            state = self._states[key] = _State()
            while len(self._states) > MAX_CONVERSATIONS:
                self._states.popitem(last=False)
        self._states.move_to_end(key)
        return state

    def history(self, key: Hashable) -> list[Turn]:
        """The turns a new question is read against: the last ``turns``, unless they have expired."""
        with self._lock:
            state = self._state(key)
            if self.turns <= 0 or self._clock() - state.turn_at > self.ttl_seconds:
                state.turns = []
            return list(state.turns[-self.turns:]) if self.turns > 0 else []

    def remember(self, key: Hashable, question: str, answer: Answer) -> str:
        """Record an answered question; returns the key of its citations (for source buttons)."""
        with self._lock:
            state = self._state(key)
            if self.turns > 0:
                if self._clock() - state.turn_at > self.ttl_seconds:
                    state.turns = []
                state.turns = [*state.turns, Turn(question=question, answer=answer.text)][-self.turns:]
            state.turn_at = self._clock()
            state.last = answer
            answer_key = secrets.token_urlsafe(6)
            state.answers[answer_key] = list(answer.citations)
            while len(state.answers) > self.answers_kept:
                state.answers.popitem(last=False)
            return answer_key

    def citations(self, key: Hashable, answer_key: str) -> list[Citation] | None:
        """The citations of an earlier answer (None: unknown or expired)."""
        with self._lock:
            state = self._states.get(key)
            return None if state is None else state.answers.get(answer_key)

    def citation(self, key: Hashable, answer_key: str, n: int) -> Citation | None:
        return next((c for c in self.citations(key, answer_key) or [] if c.n == n), None)

    def last(self, key: Hashable) -> Answer | None:
        """The conversation's last answer (for ``/sources``), None after ``reset`` or before any."""
        with self._lock:
            state = self._states.get(key)
            return None if state is None else state.last

    def reset(self, key: Hashable) -> None:
        """Start over (``/new``): forget the turns and the last answer; earlier source buttons keep working."""
        with self._lock:
            state = self._state(key)
            state.turns, state.turn_at, state.last = [], 0.0, None
