"""Split an article into passages (about a paragraph) and passages into sentences, keeping offsets.

Every span is a pair of character offsets into the article text, so ``text[start:end]`` is always the exact
passage or sentence: a citation can point at the span it quotes. Boundaries are paragraph breaks first, then
sentence ends (``. ! ? ؟`` and line breaks), then clause marks (``؛ ، ; ,``) for over-long sentences.
"""

from __future__ import annotations

import re

from .types import Chunk

# The passages an article is cut into, and what is embedded for each (``indexer.embed_text``), as a number kept
# in the article registry. Bump it whenever either changes for the same text: re-indexing then treats every
# article written by another version as changed and cuts and embeds it again, as it does an edited article.
VERSION = 1

MIN_PASSAGE = 80  # a shorter paragraph (a headline, a byline) is joined to the next one
MAX_PASSAGE = 2100  # a longer paragraph is cut at sentence ends into pieces of about TARGET_PASSAGE
TARGET_PASSAGE = 1000
MAX_SENTENCE = 400  # a longer sentence is cut at clause marks for sentence vectors

_PARAGRAPH_BREAK = re.compile(r"\n[ \t\r\f\v]*\n\s*")
_SENTENCE_END = re.compile(r"(?<=[.!?؟…])[\"'”»)\]]*\s+|\n+")
_CLAUSE_END = re.compile(r"(?<=[؛،;,:])\s+")

Span = tuple[int, int]


def _strip(text: str, start: int, end: int) -> Span | None:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return (start, end) if end > start else None


def _split(text: str, start: int, end: int, pattern: re.Pattern) -> list[Span]:
    """Spans between matches of ``pattern``; the non-space part of a match (closing quotes) stays with the
    span before it."""
    spans, pos = [], start
    for m in pattern.finditer(text, start, end):
        span = _strip(text, pos, m.start() + len(m.group().rstrip()))
        if span:
            spans.append(span)
        pos = m.end()
    last = _strip(text, pos, end)
    if last:
        spans.append(last)
    return spans


def paragraphs(text: str) -> list[Span]:
    return _split(text, 0, len(text), _PARAGRAPH_BREAK)


def sentences(text: str, start: int = 0, end: int | None = None, max_len: int = MAX_SENTENCE) -> list[Span]:
    """Sentence spans of ``text[start:end]``; sentences longer than ``max_len`` are cut at clause marks."""
    end = len(text) if end is None else end
    out: list[Span] = []
    for s, e in _split(text, start, end, _SENTENCE_END):
        if e - s <= max_len:
            out.append((s, e))
            continue
        out.extend(_pack(_split(text, s, e, _CLAUSE_END), max_len))
    return out


def _pack(spans: list[Span], limit: int) -> list[Span]:
    """Join consecutive spans into groups of at most ``limit`` characters (a single longer span stays whole)."""
    out: list[Span] = []
    for s, e in spans:
        if out and e - out[-1][0] <= limit:
            out[-1] = (out[-1][0], e)
        else:
            out.append((s, e))
    return out


def passage_spans(text: str) -> list[Span]:
    spans: list[Span] = []
    pending: Span | None = None
    for s, e in paragraphs(text):
        if pending is not None:
            s = pending[0]
            pending = None
        if e - s < MIN_PASSAGE:
            pending = (s, e)
            continue
        if e - s > MAX_PASSAGE:
            spans.extend(_pack(sentences(text, s, e, max_len=TARGET_PASSAGE), TARGET_PASSAGE))
        else:
            spans.append((s, e))
    if pending is not None:
        if spans and pending[1] - spans[-1][0] <= MAX_PASSAGE:
            spans[-1] = (spans[-1][0], pending[1])
        else:
            spans.append(pending)
    return spans


def chunk_article(article_id: str, text: str) -> list[Chunk]:
    return [
        Chunk(id=f"{article_id}#{i}", article_id=article_id, index=i, text=text[s:e], start=s, end=e)
        for i, (s, e) in enumerate(passage_spans(text))
    ]
