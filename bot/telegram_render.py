"""Telegram HTML for answers, sources and the bot's other texts, and the splitter that keeps each message
under Telegram's 4,096-character limit. Pure functions, no ``telegram`` import (``telegram_bot`` has the only
one). Every function returns HTML in which all outside text is escaped; every text a user reads comes from the
message catalogue (:mod:`bot.i18n`) in the language ``lang`` the caller chose.

An answer reads: the notice (if any), the answer — a written one with its ``[n]`` markers, or the offline quotes
as plain paragraphs, each quote once — then "Sources": one header per article (its citation numbers, the title
linked, the outlet and date), under which a written answer's quotes are shown (expandable), once each.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from html import escape, unescape

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
from newsdesk.index.language import detect
from newsdesk.index.settings import Settings
from newsdesk.index.types import IndexReport

from .answers import Answer, Citation
from .i18n import long_date, short_date, t

LIMIT = 4096  # Telegram's limit on one message's text
MAX_QUESTION_CHARS = 4000
BUTTON_NAME_CHARS = 22  # the outlet (or title) in a source button, cut beyond this
USER_COMMANDS = ("start", "help", "ask", "new", "sources", "stats")  # descriptions: "cmd.<name>" in the catalogue
ADMIN_COMMANDS = ("add", "reindex")  # shown in the command menu of the configured admins only
EXAMPLES = 3  # example questions shown by /start

# what a chat is told when a newsdesk error stops a request: the kind of problem only, never the message, which
# may name the server's paths or addresses (the log has it); the most specific class first
ERRORS = (
    (EmbedderMismatchError, "error.embedder_mismatch"),
    (StoreError, "error.store"),
    (EmbeddingError, "error.embedding"),
    (LLMError, "error.llm"),
    (FetchError, "error.fetch"),
    (InputError, "error.input"),
    (ConfigError, "error.config"),
)

_TOKEN = re.compile(r"<[^>]*>|&#?\w+;|\n|[^\S\n]+|[^<&\s]{1,100}")
_TAG = re.compile(r"</?([a-zA-Z0-9-]+)")
_SENTENCE_END = re.compile(r"(?<=[.!?؟。»”\"])\s+")
# a name in a title: a run of capitalised words (Latin, Greek, Cyrillic), e.g. "Armenian Ministry of Defense"
_CAP = r"[A-ZÀ-ÖØ-ÞΑ-ΩА-ЯЁ][\w'’-]+"
_NAME = re.compile(rf"\b{_CAP}(?:\s+(?:(?:of|de|du|la|von|van|der|al|el)\s+)?{_CAP})*")


def units(text: str) -> int:
    """Length as Telegram counts it (UTF-16 code units); never less than ``len(text)``."""
    return len(text.encode("utf-16-le")) // 2


def reply(key: str, lang: str, **kw) -> str:
    """A catalogue text as HTML: the text is the catalogue's own (it may hold tags), every value filled in is
    escaped."""
    return t(key, lang, **{k: escape(str(v)) for k, v in kw.items()})


def plain(html_text: str) -> str:
    """HTML as plain text (for a callback query's answer, which shows no markup)."""
    return unescape(re.sub(r"<[^>]+>", "", html_text))


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
    message on its own is split (by :func:`split_html`). A block may start with blank lines (a paragraph
    break); they are dropped at the start of a message."""
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


def _paragraph(text: str, limit: int) -> list[str]:
    """One paragraph of plain text as HTML blocks: whole, or broken between sentences when over-long."""
    if units(escape(text)) <= limit:
        return [escape(text)]
    return pack((escape(s) for s in _SENTENCE_END.split(text)), limit, sep=" ")


def source_heading(c: Citation, lang: str = "en", numbers: Iterable[int] | None = None) -> str:
    """``[1] [3] title — outlet, date (also reported by …)``, the title linked when the article has a URL."""
    meta = ", ".join(x for x in (c.source, long_date(c.published, lang)) if x)
    marks = " ".join(f"[{n}]" for n in (numbers or [c.n]))
    extra = f" ({reply('answer.also_reported', lang, outlets=', '.join(c.also))})" if c.also else ""
    return f"{marks} {_link(c.title or c.article_id, c.url)}" + (f" — {escape(meta)}" if meta else "") + extra


def by_article(citations: list[Citation]) -> list[list[Citation]]:
    """The citations grouped by article, in the order of each article's first citation."""
    groups: dict[str, list[Citation]] = {}
    for c in citations:
        groups.setdefault(c.article_id, []).append(c)
    return list(groups.values())


def is_quotes(answer: Answer) -> bool:
    """Whether the answer is the offline one (quotes), whose text is the quotes themselves."""
    return answer.mode in ("extractive", "fallback") and not answer.abstained and bool(answer.sentences)


def needs_hint(answer: Answer, lang: str) -> bool:
    """Whether to say how to get a written answer: an offline answer (not a fallback: the model is set up)
    whose quotes are in another language than the reader's."""
    if answer.mode != "extractive" or not answer.citations:
        return False
    return detect(" ".join(c.quote for c in answer.citations)) != lang


def answer_blocks(answer: Answer, lang: str = "en", limit: int = LIMIT) -> list[str]:
    blocks = [f"<i>{escape(answer.notice)}</i>"] if answer.notice else []
    if is_quotes(answer):
        intro = answer.text.split("\n", 1)[0]  # the engine's line saying these are quotes
        blocks.append(f"<i>{escape(intro)}</i>")
        for s in answer.sentences:  # plain paragraphs (Telegram's Translate reads them), each quote once
            marks = " ".join(f"[{n}]" for n in s.citations)
            blocks += ["\n" + b for b in _paragraph(f"«{s.text}» {marks}", limit)]
    else:
        for line in answer.text.split("\n"):
            blocks += _paragraph(line, limit)
    if answer.citations:
        blocks.append(f"\n<b>{escape(t('answer.sources', lang))}</b>")
        for group in by_article(answer.citations):
            block = source_heading(group[0], lang, [c.n for c in group])
            if not is_quotes(answer):  # a written answer: its evidence, once, folded
                block += "".join(f"\n<blockquote expandable>[{c.n}] {escape(c.quote)}</blockquote>" for c in group)
            blocks.append(block)
    if needs_hint(answer, lang):
        blocks.append(f"\n<i>{escape(t('answer.offline_hint', lang))}</i>")
    return blocks


def answer_messages(answer: Answer, lang: str = "en", limit: int = LIMIT) -> list[str]:
    return pack(answer_blocks(answer, lang, limit), limit)


def source_label(c: Citation, lang: str = "en") -> str:
    """A source button's label: ``[1] Sputnik · 28 Sep`` (the outlet, else the title, cut to fit)."""
    name = (c.source or c.title or c.article_id or "").strip()
    if len(name) > BUTTON_NAME_CHARS:
        name = name[:BUTTON_NAME_CHARS - 1].rstrip() + "…"
    return " · ".join(x for x in (f"[{c.n}] {name}".strip(), short_date(c.published, lang)) if x)


def passage_messages(c: Citation, lang: str = "en", limit: int = LIMIT) -> list[str]:
    """A source's whole passage, its quote in bold."""
    passage = c.passage or c.quote
    at = passage.find(c.quote) if c.quote else -1
    if at >= 0:
        body = f"{escape(passage[:at])}<b>{escape(c.quote)}</b>{escape(passage[at + len(c.quote):])}"
    else:
        body = escape(passage)
    return pack([source_heading(c, lang), f"<blockquote>{body}</blockquote>"], limit)


# -- /start, /help and the command menu ----------------------------------------------------------------------

def commands(lang: str, admin: bool = False) -> list[tuple[str, str]]:
    """(name, description) of the commands a user (or an admin) sees in the menu."""
    names = USER_COMMANDS + (ADMIN_COMMANDS if admin else ())
    return [(name, t(f"cmd.{name}", lang)) for name in names]


def _names(title: str) -> list[str]:
    """Names in a title: runs of capitalised words, the title's first word only when the run goes on (a
    sentence's first word is capitalised anyway)."""
    found = []
    for m in _NAME.finditer(title):
        if m.start() == 0 and " " not in m.group():
            continue
        found.append(m.group())
    return found


def example_questions(rows: list[dict], lang: str, n: int = EXAMPLES) -> list[str]:
    """Up to ``n`` questions about the indexed articles (newest first), from the catalogue's templates: about a
    name in a title, about an article by its title, about what an outlet reported on a day."""
    newest = sorted(rows, key=lambda r: (r.get("published") or "", r["id"]), reverse=True)
    kinds: list[list[str]] = [[], [], [], []]
    for row in newest[:20]:
        title = (row.get("title") or "").strip()
        kinds[0] += [t("question.entity", lang, entity=name) for name in _names(title)[:1]]
        if title and len(title) <= 90:
            kinds[1].append(t("question.title", lang, title=title))
        if row.get("source"):
            date = long_date(row.get("published"), lang)
            kinds[2].append(t("question.source", lang, source=row["source"], date=date) if date
                            else t("question.source_nodate", lang, source=row["source"]))
        if title and len(title) <= 90:
            kinds[3].append(t("question.quoted", lang, title=title))
    out: list[str] = []
    while len(out) < n and any(kinds):  # one of each kind in turn: a varied three
        for kind in kinds:
            while kind and kind[0] in out:
                kind.pop(0)
            if kind and len(out) < n:
                out.append(kind.pop(0))
    return out


def start_text(rows: list[dict], lang: str, name: str = "") -> str:
    """The greeting, with example questions about what is indexed (tap one to copy it)."""
    who = f", {name}" if name else ""
    if not rows:
        return reply("start.greeting_empty", lang, name=who)
    lines = [reply("start.greeting", lang, name=who, n=len(rows))]
    examples = example_questions(rows, lang)
    if examples:
        lines += ["", f"<b>{escape(t('start.examples', lang))}</b>",
                  *(f"• <code>{escape(q)}</code>" for q in examples)]
    lines += ["", escape(t("start.more", lang))]
    return "\n".join(lines)


def help_text(settings: Settings, lang: str = "en", admin: bool = False) -> str:
    user = "\n".join(f"/{name} — {escape(text)}" for name, text in commands(lang))
    parts = [escape(t("help.intro", lang)), escape(t("help.how", lang)),
             f"<b>{escape(t('help.commands', lang))}</b>\n{user}"]
    if admin:
        extra = "\n".join(f"/{name} — {escape(t(f'cmd.{name}', lang))}" for name in ADMIN_COMMANDS)
        uploads = reply("help.uploads", lang, types=".txt .md .html .htm .json .jsonl",
                        mb=f"{settings.upload_max_mb:g}")
        parts.append(f"<b>{escape(t('help.admin_commands', lang))}</b>\n{extra}\n\n{uploads}")
    return "\n\n".join(parts)


# -- other texts -------------------------------------------------------------------------------------------

def sources_messages(rows: list[dict], lang: str = "en", latest: int = 10) -> list[str]:
    if not rows:
        return [reply("sources.none", lang)]
    newest = sorted(rows, key=lambda r: (r["published"] or "", r["id"]), reverse=True)[:latest]
    lines = []
    for row in newest:
        meta = ", ".join(x for x in (row["source"], long_date(row["published"], lang)) if x)
        link = _link(row["title"] or row["id"], row["url"])
        lines.append(f"• {link}" + (f" — {escape(meta)}" if meta else ""))
    head = f"<b>{reply('sources.count', lang, n=len(rows))}</b>"
    if len(rows) > latest:
        head += " " + reply("sources.latest", lang, n=latest)
    return pack([head, *lines])


def stats_text(stats: dict, lang: str = "en") -> str:
    acc = stats["accurate"]
    value = reply("stats.accurate_value", lang, done=acc["passages"], total=stats["chunks"], model=acc["model"])
    return (f"<b>{reply('stats.articles', lang)}:</b> {stats['articles']}\n"
            f"<b>{reply('stats.passages', lang)}:</b> {stats['chunks']}\n"
            f"<b>{reply('stats.embedder', lang)}:</b> {escape(str(stats['embedder']))}\n"
            f"<b>{reply('stats.accurate', lang)}:</b> {value}")


def index_summary(report: IndexReport, title: str, lang: str = "en") -> str:
    """One line about indexing one file or URL."""
    if report.failed and not (report.added or report.updated or report.unchanged):
        return reply("index.failed", lang, title=title, error=report.failed[0].error)
    if not (report.added or report.updated):
        return reply("index.unchanged", lang, title=title)
    return reply("index.done", lang, title=title, added=report.added, updated=report.updated,
                 chunks=report.chunks)


def reindex_summary(report: IndexReport, folder, lang: str = "en") -> str:
    text = reply("index.rescanned", lang, folder=folder, added=report.added, updated=report.updated,
                 unchanged=report.unchanged, removed=report.removed, failed=len(report.failed),
                 chunks=report.chunks, seconds=f"{report.seconds:.1f}")
    return text + "".join(f"\n• {escape(f'{f.source}: {f.error}')}" for f in report.failed[:5])


def error_text(error: NewsdeskError, lang: str = "en") -> str:
    """The reply to a request that ``error`` stopped: one fixed line for its kind of problem."""
    key = next((key for kind, key in ERRORS if isinstance(error, kind)), "error.failed")
    return reply(key, lang)
