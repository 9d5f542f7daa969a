"""The typed answer the engine returns to every front end."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal, NamedTuple

Mode = Literal["llm", "extractive", "fallback"]
ELLIPSIS = " … "  # between the pieces of a quote that leaves words out


class Piece(NamedTuple):
    """One verbatim piece of a quote that leaves words out: ``article_text[start:end] == quote``."""

    start: int
    end: int
    quote: str


@dataclass
class Citation:
    """One numbered source of an answer, backed by a verbatim quote of the article it cites.

    ``article_text[start:end] == quote``, except for a quote that leaves words out (the model wrote "…"):
    then ``pieces`` holds its verbatim pieces in article order (each ``article_text[p.start:p.end] ==
    p.quote``), ``quote`` is they joined by ``ELLIPSIS`` and ``start``/``end`` span the first piece to the
    last. ``spans()`` gives the verbatim spans either way. ``repaired`` says what verification changed to
    find it: None (the model's quote as cited), or one or more of "reattributed" (found in another of the
    retrieved passages than the one the model cited), "ellipsis" (verified piece by piece), "trimmed" (an
    over-long quote cut to its sentences that carry the claim), joined by "+" in that order."""

    n: int
    article_id: str
    title: str | None
    source: str | None
    published: str | None
    url: str | None
    quote: str
    start: int  # offsets of ``quote`` in the article text
    end: int
    verified: bool = True
    chunk_id: str = ""
    passage: str = ""  # the whole retrieved passage the quote comes from
    repaired: str | None = None
    pieces: list[Piece] = field(default_factory=list)
    also: list[str] = field(default_factory=list)  # other outlets that reported the same story ("also reported by")

    def spans(self) -> list[Piece]:
        """The verbatim spans of the quote: its pieces, or the whole quote as one."""
        return list(self.pieces) or [Piece(self.start, self.end, self.quote)]

    def verbatim_in(self, article_text: str) -> bool:
        """Whether every span of the quote is the article's own text at its offsets."""
        return bool(self.quote) and all(article_text[p.start:p.end] == p.quote for p in self.spans())

    def to_json(self) -> dict:
        data = asdict(self)
        data.pop("chunk_id")
        data.pop("passage")
        data["pieces"] = [p._asdict() for p in self.pieces] or None
        return data


@dataclass
class Sentence:
    text: str
    citations: list[int]


@dataclass
class Turn:
    """One earlier exchange of a conversation, for follow-up questions."""

    question: str
    answer: str = ""


@dataclass
class Answer:
    question: str
    text: str  # the answer with its [n] markers
    sentences: list[Sentence]
    citations: list[Citation]
    mode: Mode
    abstained: bool
    dropped: list[str] = field(default_factory=list)  # sentences not shown: no verified citation
    notice: str | None = None  # e.g. "The language model failed; these are quotes instead."
    standalone_question: str | None = None  # the question as understood with its history
    # LLM mode: the model's citations (one per citation of a sentence) and what verification made of them;
    # also set when the answer fell back to quotes because none of them held
    proposed: int = 0  # citations the model proposed
    accepted: int = 0  # of them, those that held (as cited or repaired); the rest were dropped
    repaired: int = 0  # of the accepted, those that held only after a repair (``Citation.repaired``)
    retrieved: list[str] = field(default_factory=list)  # the ids of the passages retrieved for it, in rank order

    def to_json(self) -> dict:
        return {
            "question": self.question,
            "answer": self.text,
            "mode": self.mode,
            "abstained": self.abstained,
            "sentences": [{"text": s.text, "citations": list(s.citations)} for s in self.sentences],
            "citations": [c.to_json() for c in self.citations],
            "dropped": list(self.dropped),
            "notice": self.notice,
            "retrieved": list(self.retrieved),
        }
