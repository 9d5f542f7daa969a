"""Check the model's citations against the passages it was given, and number the ones that hold.

A citation holds when its source number is one of the passages (1..k) and its quote is found in one of the
retrieved passages (``index.textnorm.locate``: diacritics, alef forms, quotation marks, case and white space
may differ). The citation then carries the passage's own text for the located span, so every quote shown is
verbatim in the article. What a weak model gets wrong is repaired, never trusted:

- a quote found not in the passage it cites but in another retrieved passage is re-attributed to that one
  ("reattributed"); a source that is not a number in 1..k is not a citation (nothing is re-attributed);
- a quote that leaves words out ("…", "...", "[…]") is located piece by piece, in order, in one passage, and
  shown as its verbatim pieces joined by " … " ("ellipsis"; ``Citation.pieces``);
- a quote longer than ``MAX_QUOTE_SENTENCES`` sentences or ``MAX_QUOTE_CHARS`` characters is shown cut to the
  sentences (at most that many) that share the most words with the sentence it backs, the first ones when
  none does, e.g. across languages ("trimmed");
- a quote must be substantial (``textnorm.is_substantial``): ``the`` or ``.`` backs nothing.

A sentence left with no citation that holds is not shown; its text is listed in ``dropped``. Any JSON the
model sent is taken: a wrong type anywhere makes that sentence or citation not hold, never an exception.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from newsdesk.index.chunking import sentences as sentence_spans
from newsdesk.index.lexical import tokenize
from newsdesk.index.textnorm import is_substantial, locate
from newsdesk.index.types import Hit

from .answers import ELLIPSIS, Citation, Piece, Sentence

# "[1]", "[2][3]", "[1, 2]" written by the model into a sentence: the numbers are re-assigned here.
_MARKERS = re.compile(r"\s*\[\s*\d+(?:\s*,\s*\d+)*\s*\]")
_FINAL_PUNCT = ".!?؟…。"
# Where a quote leaves words out: "…", "...", "[…]", "(...)".
_ELLIPSIS = re.compile(r"\s*[\[(]?\s*(?:…|\.{3,})\s*[\])]?\s*")
_SOURCE = re.compile(r"\s*\[?\s*(\d{1,6})\s*\]?\s*")

MAX_QUOTE_CHARS = 300  # a longer quote is trimmed to its sentences that carry the claim
MAX_QUOTE_SENTENCES = 2


@dataclass
class Verified:
    sentences: list[Sentence] = field(default_factory=list)
    citations: list[Citation] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)  # sentences not shown: no citation held
    proposed: int = 0  # citations the model proposed, one per citation of a sentence
    accepted: int = 0  # of them, those that held, as cited or repaired
    repaired: int = 0  # of the accepted, those that held only after a repair


def verify(raw: object, hits: Sequence[Hit]) -> Verified:
    """Keep the sentences of a ``cited_answer`` (see ``bot.llm``) that have at least one verified citation.

    Citations are numbered 1, 2, … in order of first appearance, one per distinct span of an article."""
    out = Verified()
    numbers: dict[tuple, int] = {}
    raw_sentences = raw.get("sentences") if isinstance(raw, dict) else None
    for sentence in raw_sentences if isinstance(raw_sentences, list) else []:
        if not isinstance(sentence, dict):
            continue
        cites = sentence.get("citations")
        cites = cites if isinstance(cites, list) else []
        out.proposed += len(cites)
        text = sentence.get("text")
        text = _MARKERS.sub("", text).strip() if isinstance(text, str) else ""
        if not text:
            continue
        kept: list[int] = []
        for cite in cites:
            citation = _check(cite, hits, text)
            if citation is None:
                continue
            out.accepted += 1
            out.repaired += citation.repaired is not None
            key = (citation.article_id, tuple((p.start, p.end) for p in citation.spans()))
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


def _source(value: object, k: int) -> int | None:
    """The passage index (0-based) a citation's ``source`` names: an integer 1..k, or such a number as text
    (``"2"``, ``"[2]"``) or as a float (``2.0``); else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    elif isinstance(value, str) and (m := _SOURCE.fullmatch(value)):
        value = int(m.group(1))
    if isinstance(value, int) and 1 <= value <= k:
        return value - 1
    return None


def _check(cite: object, hits: Sequence[Hit], claim: str) -> Citation | None:
    """The citation ``cite`` (``{"source": n, "quote": str}``) as located in the retrieved passages, or None."""
    if not isinstance(cite, dict):
        return None
    cited, quote = _source(cite.get("source"), len(hits)), cite.get("quote")
    if cited is None or not isinstance(quote, str):
        return None
    pieces = [part for part in _ELLIPSIS.split(quote) if any(c.isalnum() for c in part)]
    if not pieces:
        return None
    for i in [cited, *(j for j in range(len(hits)) if j != cited)]:
        spans = _find(quote, pieces, hits[i].text)  # the quote whole first: a "…" in it may be the article's own
        if spans is None:
            continue
        repairs = ["reattributed"] if i != cited else []
        return _citation(hits[i], spans, claim, repairs)
    return None


def _find(whole: str, pieces: list[str], text: str) -> list[tuple[int, int]] | None:
    """The spans of ``text`` the quote is: the quote whole (its "…" may be the text's own), or else each of
    its pieces, in order, one after the other."""
    span = locate(whole, text)
    if span is not None:
        return [span]
    if len(pieces) < 2:
        return None
    spans: list[tuple[int, int]] = []
    at = 0
    for piece in pieces:
        span = locate(piece, text, at)
        if span is None:
            return None
        spans.append(span)
        at = span[1]
    return spans


def _citation(hit: Hit, spans: list[tuple[int, int]], claim: str, repairs: list[str]) -> Citation | None:
    """The citation of ``spans`` (offsets in ``hit.text``), trimmed if over-long; None if not substantial."""
    if len(spans) > 1:
        repairs.append("ellipsis")
    trimmed = [_trim(hit.text, s, e, claim) for s, e in spans]
    if trimmed != spans:
        repairs.append("trimmed")
    pieces = [Piece(hit.start + s, hit.start + e, hit.text[s:e]) for s, e in trimmed]
    quote = ELLIPSIS.join(p.quote for p in pieces)
    if not is_substantial(quote):
        return None
    return Citation(
        n=0, article_id=hit.article_id, title=hit.title, source=hit.source, published=hit.published,
        url=hit.url, quote=quote, start=pieces[0].start, end=pieces[-1].end, verified=True,
        chunk_id=hit.chunk_id, passage=hit.text, repaired="+".join(repairs) or None,
        pieces=pieces if len(pieces) > 1 else [],
    )


def _trim(text: str, start: int, end: int, claim: str) -> tuple[int, int]:
    """``text[start:end]`` if it is short enough, else its window of at most ``MAX_QUOTE_SENTENCES``
    consecutive sentences (within ``MAX_QUOTE_CHARS`` characters, or one sentence; a sentence longer than that
    is cut at clause marks) that shares the most words (``lexical.tokenize``: stems, no stop words) with
    ``claim``; among equals the one of fewer sentences, then the earliest, so the first sentence when nothing
    is shared (a claim in another language). Only a substantial window is chosen; when none is, the quote
    stays whole."""
    units = sentence_spans(text, start, end, max_len=MAX_QUOTE_CHARS)
    if end - start <= MAX_QUOTE_CHARS and len(units) <= MAX_QUOTE_SENTENCES:
        return start, end
    words = set(tokenize(claim))
    best: tuple[int, int] | None = None
    best_score: tuple[int, int] = (-1, 0)
    for i in range(len(units)):
        for j in range(i, min(i + MAX_QUOTE_SENTENCES, len(units))):
            s, e = units[i][0], units[j][1]
            if j > i and e - s > MAX_QUOTE_CHARS:
                break
            if not is_substantial(text[s:e]):
                continue
            score = (len(words & set(tokenize(text[s:e]))), i - j)  # more shared words, then fewer sentences
            if score > best_score:  # a tie keeps the earlier window
                best, best_score = (s, e), score
    return best or (start, end)


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
