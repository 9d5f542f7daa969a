"""Split an article into passages (about a paragraph) and passages into sentences, keeping offsets.

Every span is a pair of character offsets into the article text, so ``text[start:end]`` is always the exact
passage or sentence: a citation can point at the span it quotes. Boundaries are paragraph breaks first, then
sentence ends, then clause marks (``؛ ، ; , :`` and the full-width ``， 、 ； ：``) for over-long sentences, and
last by length (at a space when there is one, else anywhere but inside a letter and its combining marks) for a
run longer than ``MAX_PASSAGE`` with no such mark (a 5 MB line without punctuation): no passage is ever longer
than ``MAX_PASSAGE``.

Sentence ends in every script: ``. ! ? ؟ … ։`` followed by white space, line breaks, and, with no space needed
after them, the full-width ``。 ！ ？`` (Chinese, Japanese), the danda ``।`` and ``॥`` (Devanagari and other
Indic scripts), ``။`` (Myanmar), ``។`` (Khmer), ``።`` (Ethiopic) and the Urdu ``۔``; closing quotes and brackets
stay with the sentence they close. Thai and Lao put no mark at a sentence end, only a space: a space between
two letters of those scripts ends a sentence once the sentence has ``MIN_SPACED_SENTENCE`` characters (the
same space also sets off names and numbers: shorter pieces are kept with the next).
"""

from __future__ import annotations

import re
import unicodedata

from .types import Chunk

# The passages an article is cut into, and what is embedded for each (``indexer.embed_text``), as a number kept
# in the article registry. Bump it whenever either changes for the same text: re-indexing then treats every
# article written by another version as changed and cuts and embeds it again, as it does an edited article.
VERSION = 2  # 2: sentence ends of every script (long Chinese, Hindi, Thai … paragraphs are cut at them)

MIN_PASSAGE = 80  # a shorter paragraph (a headline, a byline) is joined to the next one
MAX_PASSAGE = 2100  # a longer paragraph is cut at sentence ends into pieces of about TARGET_PASSAGE
TARGET_PASSAGE = 1000
MAX_SENTENCE = 400  # a longer sentence is cut at clause marks for sentence vectors
# No passage is longer than MAX_PASSAGE: a clause still longer than that is cut by length into pieces of at most
# TARGET_PASSAGE (only such over-long runs are cut this way, so the passages of every other text are the ones
# chunker version 1 made: VERSION stayed 1).
MIN_SPACED_SENTENCE = 40  # Thai/Lao: a space ends a sentence only after this many characters

_PARAGRAPH_BREAK = re.compile(r"\n[ \t\r\f\v]*\n\s*")
_CLOSING = "\"'”’»)\\]」』）】〕》〉"  # closing quotes and brackets: they stay with the sentence they close
_SENTENCE_END = re.compile(rf"(?<=[.!?؟…։])[{_CLOSING}]*\s+|(?<=[。！？｡।॥။។።۔])[{_CLOSING}]*\s*|\n+")
_CLAUSE_END = re.compile(r"(?<=[؛،;,:])\s+|(?<=[，、；：])\s*")
_SPACED_GAP = re.compile(r"(?<=[\u0e00-\u0eff])[ \t\u00a0]+(?=[\u0e00-\u0eff])")  # Thai and Lao
_TO_LAST_SPACE = re.compile(r".*\s", re.DOTALL)

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


def sentences(text: str, start: int = 0, end: int | None = None, max_len: int = MAX_SENTENCE,
              hard_max: int | None = None) -> list[Span]:
    """Sentence spans of ``text[start:end]``; sentences longer than ``max_len`` are cut at clause marks, and
    (with ``hard_max``) a clause longer than ``hard_max`` by length into pieces of at most ``max_len``."""
    end = len(text) if end is None else end
    out: list[Span] = []
    for s, e in _spaced_sentences(text, _split(text, start, end, _SENTENCE_END)):
        if e - s <= max_len:
            out.append((s, e))
            continue
        clauses = _split(text, s, e, _CLAUSE_END)
        if hard_max is not None:
            clauses = [piece for cs, ce in clauses
                       for piece in (_cut(text, cs, ce, max_len) if ce - cs > hard_max else [(cs, ce)])]
        out.extend(_pack(clauses, max_len))
    return out


def _spaced_sentences(text: str, spans: list[Span]) -> list[Span]:
    """``spans`` with those that hold Thai or Lao text cut at the spaces between its letters, each piece at least
    ``MIN_SPACED_SENTENCE`` characters long (a shorter one is kept with the next; a last piece shorter than half
    that, with the one before)."""
    out: list[Span] = []
    for s, e in spans:
        if e - s <= MIN_SPACED_SENTENCE or not _SPACED_GAP.search(text, s, e):
            out.append((s, e))
            continue
        pos = s
        for m in _SPACED_GAP.finditer(text, s, e):
            if m.start() - pos >= MIN_SPACED_SENTENCE:
                out.append((pos, m.start()))
                pos = m.end()
        if out and pos > s and e - pos < MIN_SPACED_SENTENCE // 2 and out[-1][0] >= s:
            out[-1] = (out[-1][0], e)  # a short last piece: kept with the one before
        else:
            out.append((pos, e))
    return out


def _cut(text: str, start: int, end: int, limit: int) -> list[Span]:
    """``text[start:end]`` cut by length into spans of at most ``limit`` characters, each ending at the last
    white space that keeps it within the limit (anywhere, when the piece has no white space)."""
    out: list[Span] = []
    pos = start
    while pos < end:
        if end - pos <= limit:
            cut = end
        else:
            space = _last_space(text, pos, pos + limit)
            cut = space if space > pos else _grapheme_start(text, pos, pos + limit)
        span = _strip(text, pos, cut)
        if span:
            out.append(span)
        pos = cut
    return out


def _grapheme_start(text: str, start: int, cut: int) -> int:
    """``cut``, or the offset before it where a letter begins when ``text[cut]`` is a combining mark (a vowel
    sign, a virama, a diacritic): a cut never separates a letter from its marks."""
    while cut > start + 1 and unicodedata.category(text[cut])[0] == "M":
        cut -= 1
    return cut


def _last_space(text: str, start: int, end: int) -> int:
    """The offset of the last white space character in ``text[start:end + 1]`` (the character just after the
    limit may be the space to cut at), or -1."""
    match = _TO_LAST_SPACE.match(text, start, end + 1)
    return match.end() - 1 if match else -1


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
            spans.extend(_pack(sentences(text, s, e, max_len=TARGET_PASSAGE, hard_max=MAX_PASSAGE), TARGET_PASSAGE))
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
