"""Telegram HTML for answers, sources and the bot's other texts, and the splitter that keeps each message
under Telegram's 4,096-character limit. Pure functions, no ``telegram`` import (``telegram_bot`` has the only
one). Every function returns HTML in which all outside text is escaped."""

from __future__ import annotations

import re
from collections.abc import Iterable
from html import escape

from newsdesk.index.errors import (
    ConfigError,
    EmbedderMismatchError,
    EmbeddingError,
    FetchError,
    InputError,
    LLMError,
    NewsdeskError,
    StoreError,
)
from newsdesk.index.settings import Settings
from newsdesk.index.types import IndexReport

from .answers import Answer, Citation

LIMIT = 4096  # Telegram's limit on one message's text
MAX_QUESTION_CHARS = 4000
EXAMPLES = ("What weapons did each side allege?",
            "Who is the spokesperson of the Armenian Ministry of Defense?",
            "ماذا قالت وزارة الدفاع الأذربيجانية؟")
COMMANDS = (("start", "what this bot does"), ("help", "how to ask, with examples"),
            ("ask", "ask a question (in groups: /ask your question)"), ("new", "start a new conversation"),
            ("sources", "the indexed articles"), ("stats", "the size of the index"),
            ("add", "admins: index a web article (/add URL)"),
            ("reindex", "admins: re-scan the articles folder"))

# short replies (HTML)
APOLOGY = "Sorry, something went wrong on my side. Please try again in a moment."
ASK_SOMETHING = f"Ask me a question about the news, for example: <i>{escape(EXAMPLES[0])}</i>"
TOO_LONG = "That is too long for a question ({n:,} characters). Please ask in under {limit:,} characters."
SLOW_DOWN = "Slow down a little, please: try again in {seconds} s."
ONLY_TEXT = "I can only read text. Please type your question about the news."
UNKNOWN_COMMAND = "I don't know that command. /help lists what I can do."
PRIVATE = "Sorry, this bot is private: it only answers in the chats it was set up for."
ONLY_ADMINS = "Sorry, only the bot's admins can add or re-index articles."
NEW_CONVERSATION = "Starting a new conversation: ask away."
EXPIRED = "This answer has expired: please ask again."
ADD_USAGE = "Usage: /add https://example.com/some-article"
NO_FOLDER = "No articles folder is configured (NEWSDESK_ARTICLES_DIR), so there is nothing to re-scan."
FILE_TYPES = "I can index these files: {types}."
FILE_TOO_BIG = "That file is too big; the limit is {mb:g} MB."

# what a chat is told when a newsdesk error stops a request: the kind of problem only, never the message, which
# may name the server's paths or addresses (the log has it); the most specific class first
ERRORS = (
    (EmbedderMismatchError, "Sorry: the index was built with another embedder, so I cannot search it; the bot's "
                            "admin must rebuild it."),
    (StoreError, "Sorry: the article index is not available right now. Please try again in a while."),
    (EmbeddingError, "Sorry: the search model failed. Please try again in a while."),
    (LLMError, "Sorry: the language model could not answer right now. Please try again in a while."),
    (FetchError, "Sorry: that page could not be fetched."),
    (InputError, "Sorry: that article could not be read."),
    (ConfigError, "Sorry: the bot is not set up correctly; its admin can find the details in its log."),
)
FAILED = "Sorry: that could not be done. Please try again in a while."

_TOKEN = re.compile(r"<[^>]*>|&#?\w+;|\n|[^\S\n]+|[^<&\s]{1,100}")
_TAG = re.compile(r"</?([a-zA-Z0-9-]+)")
_SENTENCE_END = re.compile(r"(?<=[.!?؟。»”\"])\s+")


def units(text: str) -> int:
    """Length as Telegram counts it (UTF-16 code units); never less than ``len(text)``."""
    return len(text.encode("utf-16-le")) // 2


# -- splitting ---------------------------------------------------------------------------------------------

def split_html(block: str, limit: int = LIMIT) -> list[str]:
    """Split one over-long HTML block between words (or inside a very long word), never inside a tag or an
    entity; tags open at a split are closed at the end of one piece and reopened at the start of the next."""
    pieces: list[str] = []
    cur, cur_units, stack = "", 0, []  # stack: (name, opening tag) of the tags open at this point
    has_text = False  # whether ``cur`` holds more than the tags reopened after a split

    def closing(tags) -> str:
        return "".join(f"</{name}>" for name, _ in reversed(tags))

    for tok in _TOKEN.findall(block):
        after = list(stack)
        name = _TAG.match(tok)
        if name and tok.startswith("</"):
            after = after[:-1]
        elif name:
            after.append((name.group(1), tok))
        if has_text and cur_units + units(tok) + units(closing(after)) > limit:
            pieces.append(cur + closing(stack))
            cur = "".join(opening for _, opening in stack)
            cur_units, has_text = units(cur), False
            if tok.isspace():
                continue
        cur += tok
        cur_units += units(tok)
        has_text = has_text or not (name or tok.isspace())
        stack = after
    if has_text:
        pieces.append(cur + closing(stack))
    return pieces


def pack(blocks: Iterable[str], limit: int = LIMIT, sep: str = "\n") -> list[str]:
    """Greedily pack whole blocks into messages of at most ``limit``; only a block that is longer than a
    message on its own is split (by :func:`split_html`)."""
    messages: list[str] = []
    cur = ""
    for block in blocks:
        parts = [block] if units(block) <= limit else split_html(block, limit)
        for part in parts:
            if cur and units(cur) + units(sep) + units(part) <= limit:
                cur += sep + part
            else:
                if cur:
                    messages.append(cur)
                cur = part.lstrip("\n")
    if cur.strip():
        messages.append(cur)
    return messages


# -- answers -----------------------------------------------------------------------------------------------

def _link(title: str, url: str | None) -> str:
    return f'<a href="{escape(url)}">{escape(title)}</a>' if url else escape(title)


def source_heading(c: Citation) -> str:
    """``[n] title — outlet, date``, the title linked when the article has a URL."""
    meta = ", ".join(x for x in (c.source, c.published) if x)
    return f"[{c.n}] {_link(c.title or c.article_id, c.url)}" + (f" — {escape(meta)}" if meta else "")


def answer_blocks(answer: Answer, limit: int = LIMIT) -> list[str]:
    blocks = [f"<i>{escape(answer.notice)}</i>"] if answer.notice else []
    for line in answer.text.split("\n"):
        if units(escape(line)) <= limit:
            blocks.append(escape(line))
        else:  # a long paragraph: break it between sentences first
            blocks += pack((escape(s) for s in _SENTENCE_END.split(line)), limit, sep=" ")
    if answer.citations:
        blocks.append("\n<b>Sources</b>")
        blocks += [f"{source_heading(c)}\n<blockquote expandable>{escape(c.quote)}</blockquote>"
                   for c in answer.citations]
    return blocks


def answer_messages(answer: Answer, limit: int = LIMIT) -> list[str]:
    return pack(answer_blocks(answer, limit), limit)


def passage_messages(c: Citation, limit: int = LIMIT) -> list[str]:
    """A source's whole passage, its quote in bold."""
    passage = c.passage or c.quote
    at = passage.find(c.quote) if c.quote else -1
    if at >= 0:
        body = f"{escape(passage[:at])}<b>{escape(c.quote)}</b>{escape(passage[at + len(c.quote):])}"
    else:
        body = escape(passage)
    return pack([source_heading(c), f"<blockquote>{body}</blockquote>"], limit)


# -- other texts -------------------------------------------------------------------------------------------

def help_text(settings: Settings) -> str:
    examples = "\n".join(f"• {escape(q)}" for q in EXAMPLES)
    commands = "\n".join(f"/{name} — {escape(text)}" for name, text in COMMANDS)
    return (
        "Ask me about the indexed news articles, in any language. I answer with numbered citations [n], "
        "each backed by a verbatim quote; tap a source's button to read its whole passage.\n\n"
        f"<b>Examples</b>\n{examples}\n\n"
        "In a private chat just write your question. In a group, mention me, reply to one of my messages, "
        "or use /ask your question. Follow-up questions work; /new starts over.\n\n"
        f"<b>Commands</b>\n{commands}\n\n"
        "Admins can also send a .txt, .md, .html, .htm, .json or .jsonl file "
        f"(up to {settings.upload_max_mb:g} MB) to index it."
    )


def sources_messages(rows: list[dict], latest: int = 10) -> list[str]:
    if not rows:
        return ["No articles are indexed yet."]
    newest = sorted(rows, key=lambda r: (r["published"] or "", r["id"]), reverse=True)[:latest]
    lines = []
    for row in newest:
        meta = ", ".join(x for x in (row["source"], row["published"]) if x)
        link = _link(row["title"] or row["id"], row["url"])
        lines.append(f"• {link}" + (f" — {escape(meta)}" if meta else ""))
    head = f"<b>{len(rows)} article{'s' if len(rows) != 1 else ''} indexed.</b>"
    if len(rows) > latest:
        head += f" The latest {latest}:"
    return pack([head, *lines])


def stats_text(stats: dict) -> str:
    acc = stats["accurate"]
    return (f"<b>Articles:</b> {stats['articles']}\n<b>Passages:</b> {stats['chunks']}\n"
            f"<b>Embedder:</b> {escape(str(stats['embedder']))}\n"
            f"<b>Accurate vectors:</b> {acc['passages']} of {stats['chunks']} passages "
            f"({escape(str(acc['model']))})")


def index_summary(report: IndexReport, title: str) -> str:
    """One line about indexing one file or URL."""
    if report.failed and not (report.added or report.updated or report.unchanged):
        return escape(f"Could not index '{title}': {report.failed[0].error}")
    if not (report.added or report.updated):
        return escape(f"'{title}' is already indexed (unchanged).")
    done = ", ".join(f"{n} {what}" for n, what in ((report.added, "added"), (report.updated, "updated")) if n)
    return escape(f"Indexed '{title}': {done}, {report.chunks} passages")


def reindex_summary(report: IndexReport, folder) -> str:
    text = (f"Re-scanned {folder}: {report.added} added, {report.updated} updated, "
            f"{report.unchanged} unchanged, {report.removed} removed, {len(report.failed)} failed; "
            f"{report.chunks} passages written in {report.seconds:.1f} s")
    text += "".join(f"\n• {f.source}: {f.error}" for f in report.failed[:5])
    return escape(text)


def error_text(error: NewsdeskError) -> str:
    """The reply to a request that ``error`` stopped: one fixed line for its kind of problem."""
    return next((text for kind, text in ERRORS if isinstance(error, kind)), FAILED)
