"""Plain-text rendering of answers and hits for the terminal."""

from __future__ import annotations

import re

from newsdesk.index.dates import Filters
from newsdesk.index.types import Hit

from .answers import Answer, Citation
from .i18n import long_date, t

# control characters (newlines, carriage returns, terminal escapes), line and paragraph separators, and the
# bidirectional controls that reorder what follows them
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """``text`` with its control characters escaped (``\\n``, ``\\x1b``, ``\\u202e``): a file name or a message
    quoting one then stays on its line of a report and cannot forge the next one, nor drive the terminal."""
    return _UNPRINTABLE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def describe_filters(filters: Filters, lang: str = "en") -> str:
    """Which articles ``filters`` let through, in a few words in ``lang`` ("since 27 Sep 2020, from Sputnik")."""
    parts = []
    if filters.since is not None and filters.since == filters.until:
        parts.append(t("filter.on", lang, date=long_date(filters.since.isoformat(), lang)))
    else:
        if filters.since is not None:
            parts.append(t("filter.since", lang, date=long_date(filters.since.isoformat(), lang)))
        if filters.until is not None:
            parts.append(t("filter.until", lang, date=long_date(filters.until.isoformat(), lang)))
    if filters.source is not None:
        parts.append(t("filter.source", lang, source=filters.source))
    return t("filter.join", lang).join(parts)


def source_line(c: Citation | Hit) -> str:
    meta = ", ".join(x for x in (c.source, c.published, c.url) if x)
    also = f" ({t('answer.also_reported', outlets=', '.join(c.also))})" if c.also else ""
    return f"{c.title or c.article_id}" + (f" — {meta}" if meta else "") + also


def format_answer_text(answer: Answer) -> str:
    lines = []
    if answer.notice:
        lines += [f"({answer.notice})", ""]
    lines.append(answer.text)
    if answer.citations:
        lines += ["", "Sources:"]
        for c in answer.citations:
            lines.append(f"[{c.n}] {source_line(c)}")
            lines.append(f"    «{c.quote}»")
    return "\n".join(lines)


def format_hit_text(hit: Hit) -> str:
    text = " ".join(hit.text.split())
    if len(text) > 400:
        text = text[:400] + "…"
    return f"{hit.rank}. [{hit.score:.2f}] {source_line(hit)}  ({hit.chunk_id})\n   {text}\n"
