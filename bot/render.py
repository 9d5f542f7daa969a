"""Plain-text rendering of answers and hits for the terminal."""

from __future__ import annotations

from newsdesk.index.types import Hit

from .answers import Answer, Citation


def source_line(c: Citation | Hit) -> str:
    meta = ", ".join(x for x in (c.source, c.published, c.url) if x)
    return f"{c.title or c.article_id}" + (f" — {meta}" if meta else "")


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
