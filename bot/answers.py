"""The typed answer the engine returns to every front end."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

Mode = Literal["llm", "extractive", "fallback"]


@dataclass
class Citation:
    """One numbered source of an answer, backed by a verbatim quote of the article it cites."""

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

    def to_json(self) -> dict:
        data = asdict(self)
        data.pop("chunk_id")
        data.pop("passage")
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
        }
