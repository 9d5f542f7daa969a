"""Check the model's citations against the passages it was given, and number the ones that hold.

A citation holds when its source number is one of the passages (1..k) and its quote is found in that passage
(``index.textnorm.locate``: diacritics, alef forms, quotation marks and white space may differ). The citation
then carries the passage's own text for the located span, so every quote shown is verbatim in the article.
A sentence left with no citation that holds is not shown; its text is listed in ``dropped``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from newsdesk.index.textnorm import locate
from newsdesk.index.types import Hit

from .answers import Citation, Sentence

# "[1]", "[2][3]", "[1, 2]" written by the model into a sentence: the numbers are re-assigned here.
_MARKERS = re.compile(r"\s*\[\s*\d+(?:\s*,\s*\d+)*\s*\]")
_FINAL_PUNCT = ".!?؟…。"


@dataclass
class Verified:
    sentences: list[Sentence] = field(default_factory=list)
    citations: list[Citation] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)  # sentences not shown: no citation held


def verify(raw: dict, hits: Sequence[Hit]) -> Verified:
    """Keep the sentences of a ``cited_answer`` (see ``bot.llm``) that have at least one verified citation.

    Citations are numbered 1, 2, … in order of first appearance, one per distinct span of an article."""
    out = Verified()
    numbers: dict[tuple[str, int, int], int] = {}
    for sentence in raw.get("sentences") or []:
        text = _MARKERS.sub("", str(sentence.get("text", ""))).strip()
        if not text:
            continue
        kept: list[int] = []
        for cite in sentence.get("citations") or []:
            citation = _check(cite, hits)
            if citation is None:
                continue
            key = (citation.article_id, citation.start, citation.end)
            if key not in numbers:
                numbers[key] = citation.n = len(out.citations) + 1
                out.citations.append(citation)
            if numbers[key] not in kept:
                kept.append(numbers[key])
        if kept:
            out.sentences.append(Sentence(text=text, citations=kept))
        else:
            out.dropped.append(text)
    return out


def _check(cite: object, hits: Sequence[Hit]) -> Citation | None:
    """The citation ``cite`` (``{"source": n, "quote": str}``) as located in its passage, or None."""
    if not isinstance(cite, dict):
        return None
    source, quote = cite.get("source"), cite.get("quote")
    if isinstance(source, bool) or not isinstance(source, int) or not isinstance(quote, str):
        return None
    if not 1 <= source <= len(hits):
        return None
    hit = hits[source - 1]
    span = locate(quote, hit.text)
    if span is None:
        return None
    s, e = span
    return Citation(
        n=0, article_id=hit.article_id, title=hit.title, source=hit.source, published=hit.published,
        url=hit.url, quote=hit.text[s:e], start=hit.start + s, end=hit.start + e, verified=True,
        chunk_id=hit.chunk_id, passage=hit.text,
    )


def render_text(sentences: Sequence[Sentence]) -> str:
    """The answer as one text with its markers, placed before a sentence's final punctuation:
    ``"Armenia said X [1][2]. Azerbaijan said Y [3]."``"""
    parts = []
    for sentence in sentences:
        text = sentence.text.strip()
        markers = "".join(f"[{n}]" for n in sentence.citations)
        if markers:
            body = text.rstrip(_FINAL_PUNCT)
            text = f"{body.rstrip()} {markers}{text[len(body):]}"
        parts.append(text)
    return " ".join(parts)
