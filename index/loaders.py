"""Loading articles from files, folders and URLs.

``load_sources`` never raises for bad input: every source (or JSON record) that cannot be loaded becomes a
:class:`Failure` with a one-line reason, and the rest still loads.

Article ids are stable across runs: a file given directly → its name without extension; a file found under a
given folder → its path relative to that folder without extension ("2020/karabakh"); a URL → the final URL after
redirects, or the page's canonical URL when that is on the same site (the same host, ``www.`` aside: a page
cannot claim another site's article); a JSON record → its ``id``, else ``sha256(text)[:16]``. A user name and
password in a URL (``https://user:secret@host/``) are removed before anything else: no id, ``url``, origin,
failure or log line ever holds them (they are only sent to that host, see ``fetch``).

Only regular files are read: a FIFO, socket or device (in a folder, or given directly) is a failure "not a
regular file (FIFO)", never opened (opening a FIFO blocks until someone writes to it). A folder that cannot be
read is a failure too, and says which of its articles must not be pruned (``Failure.root``/``keep_prefix``).

``Article.text`` always starts with the title line. For text files it is the file after the front matter, with
line endings normalised to ``\\n`` and leading/trailing blank lines removed, otherwise unchanged (citations are
offsets into it).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import re
import stat
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from .errors import InputError
from .fetch import FetchedPage, fetch_url, same_site, strip_userinfo
from .settings import Settings
from .textnorm import normalize
from .types import Article, Failure, LoadResult

TEXT_EXTENSIONS = {".txt", ".md"}
HTML_EXTENSIONS = {".html", ".htm"}
JSON_EXTENSIONS = {".json", ".jsonl"}
EXTENSIONS = TEXT_EXTENSIONS | HTML_EXTENSIONS | JSON_EXTENSIONS
FRONT_MATTER_KEYS = {"title", "url", "source", "published", "lang"}
MAX_TITLE_CHARS = 300
_URL_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
log = logging.getLogger(__name__)


# ---------------------------------------------------------------- entry point


def load_sources(sources: Sequence[str], settings: Settings) -> LoadResult:
    """Load every file, folder (recursively) and http(s) URL in ``sources``."""
    result = LoadResult()
    seen: dict[str, int] = {}  # article id -> its index in result.articles
    for source in sources:
        for item in _load_one(str(source), settings, result):
            if isinstance(item, Failure):
                result.failed.append(item)
            elif item.id not in seen:
                seen[item.id] = len(result.articles)
                result.articles.append(item)
            else:
                first = result.articles[seen[item.id]]
                if _same_file(first.origin, item.origin):  # given directly and inside a given folder
                    first.root = first.root or item.root
                else:
                    result.failed.append(Failure(item.origin, f"duplicate article id {item.id!r} "
                                                              f"(already loaded from {first.origin})", item.id))
    return result


def _same_file(a: str, b: str) -> bool:
    return a == b or (not _URL_RE.match(a) and os.path.realpath(a) == os.path.realpath(b))


def _load_one(source: str, settings: Settings, result: LoadResult) -> Iterator[Article | Failure]:
    if not source.strip():
        yield Failure(source, "empty source (expected a file, a folder or a URL)")
        return
    if _URL_RE.match(source):
        shown = strip_userinfo(source)  # before anything else: the password is never shown or stored
        yield from _guard(shown, None, lambda: [_load_url(source, shown, settings)])
        return
    path = Path(source).expanduser()
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        yield Failure(source, "a broken link" if os.path.lexists(path) else "no such file or folder")
        return
    except OSError as exc:
        yield Failure(source, f"cannot read it: {exc.strerror or 'I/O error'}")
        return
    if stat.S_ISDIR(mode):
        root = str(path.resolve())
        result.roots.append(root)
        for item in _walk(path, root):
            if isinstance(item, Failure):
                yield item
            else:
                rel_id = item.relative_to(path).with_suffix("").as_posix()
                yield from _load_file(item, rel_id, root, settings)
    elif stat.S_ISREG(mode):
        if path.suffix.lower() not in EXTENSIONS:
            yield Failure(source, f"unsupported file type {path.suffix or '(none)'!r} "
                                  f"(use {', '.join(sorted(EXTENSIONS))})")
            return
        yield from _load_file(path, path.stem, None, settings)
    else:
        yield Failure(source, f"not a regular file ({_file_kind(mode)})")


def _file_kind(mode: int) -> str:
    """What a file that is not a regular file or folder is, in a few words."""
    for test, kind in ((stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device"), (stat.S_ISDIR, "folder")):
        if test(mode):
            return kind
    return "special file"


def _walk(folder: Path, root: str) -> Iterator[Path | Failure]:
    """Files with a supported extension under ``folder``, in a stable order, skipping hidden files and folders;
    one that is not a regular file (a FIFO, socket, device), and a folder that cannot be read, is a Failure
    instead (it keeps the articles that were found there before: they are not pruned)."""
    errors: list[OSError] = []
    for dirpath, dirnames, filenames in os.walk(folder, onerror=errors.append):
        while errors:
            yield _folder_failure(errors.pop(0), folder, root)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith(".") or Path(name).suffix.lower() not in EXTENSIONS:
                continue
            path = Path(dirpath) / name
            try:
                mode = path.stat().st_mode
            except OSError:
                mode = None  # a broken link: reading it says why
            if mode is None or stat.S_ISREG(mode):
                yield path
            else:
                yield Failure(str(path), f"not a regular file ({_file_kind(mode)})",
                              path.relative_to(folder).with_suffix("").as_posix())
    while errors:
        yield _folder_failure(errors.pop(0), folder, root)


def _folder_failure(exc: OSError, folder: Path, root: str) -> Failure:
    where = Path(exc.filename) if exc.filename else folder
    try:
        prefix = where.relative_to(folder).as_posix()
    except ValueError:
        prefix = "."
    prefix = "" if prefix == "." else prefix + "/"
    return Failure(str(where), f"cannot read folder: {exc.strerror or 'I/O error'}", root=root,
                   keep_prefix=prefix)


def _guard(source: str, article_id: str | None,
           load: Callable[[], Iterable[Article | Failure]], file: str | None = None) -> list[Article | Failure]:
    """``load()``, or its error as a Failure of ``source`` (``file``: the file whose articles it keeps)."""
    try:
        return list(load())
    except InputError as exc:
        return [Failure(source, _one_line(str(exc)), article_id, file=file)]
    except Exception as exc:  # a library's surprise must not stop the other sources
        log.warning("unexpected error loading %s", source, exc_info=True)
        return [Failure(source, f"unexpected error while loading ({type(exc).__name__})", article_id, file=file)]


def _load_file(path: Path, article_id: str, root: str | None, settings: Settings) -> list[Article | Failure]:
    suffix = path.suffix.lower()
    source = str(path)
    if suffix in JSON_EXTENSIONS:  # its records' ids are inside it: a failure keeps what it held before
        return _guard(source, None, lambda: _json_records(path, root, settings), file=os.path.realpath(path))

    def load() -> list[Article]:
        data = read_limited(path, settings)
        if suffix in HTML_EXTENSIONS:
            article = article_from_html(data, article_id, origin=source)
        else:
            article = article_from_text(decode_text(data), article_id, markdown=suffix == ".md", origin=source)
        article.root = root
        return [article]

    return _guard(source, article_id, load)


def _load_url(url: str, shown: str, settings: Settings) -> Article:
    """The article at ``url``; ``shown`` is the URL without its user name and password (its origin)."""
    page: FetchedPage = fetch_url(url, settings)
    if page.is_html:
        article = article_from_html(page.body, None, origin=shown, base_url=page.url_final, charset=page.charset)
    else:
        article = article_from_text(decode_text(page.body, page.charset), page.url_final, origin=shown)
        article.url = page.url_final
    return article


# ---------------------------------------------------------------- identity across runs


def origin_file(origin: str) -> str:
    """The file an article's ``origin`` names: the origin itself, or for a JSON record ("file.jsonl:3") the file."""
    match = re.fullmatch(r"(.+):(\d+)", origin)
    return match.group(1) if match and not os.path.lexists(origin) else origin


def conflict(article: Article, record: dict) -> str | None:
    """Why ``article`` may not replace the indexed article with the same id (``record``: its registry record),
    or None when it may. It may when it comes from the same place: a URL replaces what was loaded from a URL
    (the id is the URL fetched, or a canonical URL on its site: the same page); a file replaces what was found
    under the same given folder, or loaded from the same file, or from a file that no longer exists (it moved).
    Anything else (another folder's file with the same relative path, a JSON record naming another source's
    id, a page taking a file's id) is a conflict: the indexed article stays as it is."""
    old = str(record.get("origin") or "")
    if not old:
        return None  # written before origins were recorded
    new_url, old_url = bool(_URL_RE.match(article.origin)), bool(_URL_RE.match(old))
    if new_url and old_url:
        return None
    if not new_url and not old_url:
        if article.root and record.get("root") == article.root:
            return None
        old_path, new_path = origin_file(old), origin_file(article.origin)
        if not os.path.lexists(old_path) or os.path.realpath(old_path) == os.path.realpath(new_path):
            return None
    return (f"article id {article.id!r} is already taken by {old}: not replaced (rename one of them, or remove "
            f"that one and index its folder with --prune)")


# ---------------------------------------------------------------- reading and decoding


def read_limited(path: Path, settings: Settings) -> bytes:
    """Read a whole regular file, refusing (before reading) one larger than ``settings.max_file_bytes`` and
    anything else (a FIFO, socket or device: opened without blocking, never read)."""
    limit = settings.max_file_bytes
    too_big = InputError(f"file is larger than the {settings.max_file_mb:g} MB limit")
    try:
        mode = path.stat().st_mode
        if not stat.S_ISREG(mode):
            raise InputError(f"not a regular file ({_file_kind(mode)})")
        # O_NONBLOCK: should it have been swapped for a FIFO since stat(), opening it does not wait for a writer
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
        with open(fd, "rb", closefd=True) as fh:
            info = os.fstat(fh.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise InputError(f"not a regular file ({_file_kind(info.st_mode)})")
            if info.st_size > limit:
                raise too_big
            data = fh.read(limit + 1)
    except OSError as exc:
        raise InputError(f"cannot read file: {exc.strerror or 'I/O error'}") from exc
    if len(data) > limit:  # it grew since stat()
        raise too_big
    if not data or data.isspace():
        raise InputError("empty file")
    return data


def decode_text(data: bytes, declared: str | None = None) -> str:
    """Decode text bytes: UTF-8 (BOM stripped), UTF-16 (BOM, or BOM-less detected by its NUL bytes), a declared
    charset (if it decodes cleanly), else Windows-1256 when that reads as Arabic. Raises InputError."""
    if data[:3] == b"\xef\xbb\xbf":
        text = _strict(data[3:], "utf-8")
    elif data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        text = _strict(data, "utf-16")
    elif b"\x00" in data:
        utf16 = _utf16_without_bom(data)
        text = _strict(data, utf16) if utf16 else None
        if text is None or _looks_binary(text):
            raise InputError("binary file, not text")
    else:
        if _control_bytes(data[:65536]) > max(2, min(len(data), 65536) * 0.01):
            raise InputError("binary file, not text")
        text = _strict(data, "utf-8") or (_strict(data, declared) if declared else None)
        if text is None:
            text = _strict(data, "cp1256")
            if text is not None and not _plausibly_arabic(text):
                text = None
    if text is None:
        raise InputError("cannot decode text (not UTF-8, UTF-16 or Windows-1256)")
    if _looks_binary(text):
        raise InputError("binary file, not text")
    if not text or text.isspace():
        raise InputError("empty file")
    return text


def _strict(data: bytes, encoding: str) -> str | None:
    try:
        return data.decode(encoding)
    except (UnicodeDecodeError, LookupError):
        return None


def _utf16_without_bom(data: bytes) -> str | None:
    """'utf-16-le' or '-be' when the NUL bytes all sit at odd or at even offsets (ASCII in UTF-16)."""
    if len(data) % 2:
        return None
    sample = data[:65536]
    even = sample[0::2].count(0)
    odd = sample[1::2].count(0)
    if odd and even <= odd * 0.05:
        return "utf-16-le"
    if even and odd <= even * 0.05:
        return "utf-16-be"
    return None


def _control_bytes(data: bytes) -> int:
    return sum(1 for b in data if (b < 32 and b not in b"\t\n\r\f\v") or b == 127)


def _looks_binary(text: str) -> bool:
    sample = text[:65536]
    bad = sum(1 for c in sample if unicodedata.category(c) == "Cc" and c not in "\t\n\r\f\v")
    return bad > max(2, len(sample) * 0.01)


def _plausibly_arabic(text: str) -> bool:
    """Text decoded as Windows-1256 is believed when its non-ASCII characters are mostly Arabic letters or
    common punctuation (Latin-1 text or random bytes decode to other symbols). Counted without a list of the
    characters (one string object per character: 800 MB for a 10 MB file)."""
    non_ascii = len(text) - _count(_ASCII, text)
    if not non_ascii:
        return True
    arabic = _count(_ARABIC_BLOCK, text)
    punct = _count(_ARABIC_PUNCT, text)
    return arabic > 0 and (arabic + punct) >= 0.9 * non_ascii


_ASCII = re.compile("[\x00-\x7f]+")
_ARABIC_BLOCK = re.compile("[\u0600-\u06ff]+")
_ARABIC_PUNCT = re.compile("[«»…–—‘’“”\u00a0\u200c\u200d\u200e\u200f]+")


def _count(pattern: re.Pattern, text: str) -> int:
    """How many characters of ``text`` ``pattern`` (a character class with ``+``) matches."""
    return sum(m.end() - m.start() for m in pattern.finditer(text))


def _clean_url(url: str | None) -> str | None:
    """A URL from an article's metadata, without a user name and password."""
    return strip_userinfo(url.strip()) or None if url else None


def _one_line(message: str) -> str:
    return " ".join(message.split())


def _clean_text(text: str) -> str:
    """Normalise line endings and drop white space (blank lines) at both ends; keep the rest exact."""
    return text.replace("\r\n", "\n").replace("\r", "\n").strip()


# ---------------------------------------------------------------- text and markdown files


def article_from_text(text: str, article_id: str, *, markdown: bool = False, origin: str = "") -> Article:
    """Build an article from the decoded contents of a .txt/.md file (front matter and dateline understood)."""
    meta, body = split_front_matter(text.lstrip("\ufeff"))
    body = _clean_text(body)
    if not body:
        raise InputError("empty file")
    first_line = _nonblank_lines(body, 1)[0]
    title = meta.get("title") or _title_from_line(first_line, markdown)
    source = meta.get("source")
    published = parse_date(meta["published"]) if meta.get("published") else None
    if not source or not published:
        outlet, date = find_dateline(body)
        source = source or outlet
        published = published or date or kept_date(meta.get("published"), origin)
    return Article(id=article_id, title=title, text=body, url=_clean_url(meta.get("url")), source=source,
                   published=published, lang=meta.get("lang") or guess_lang(body), origin=origin)


def split_front_matter(text: str) -> tuple[dict[str, str], str]:
    """``---`` / ``key: value`` lines / ``---`` at the very start → (the known keys, the rest of the text)."""
    match = re.match(r"---[ \t]*\r?\n((?:.*\r?\n)*?)---[ \t]*(?:\r?\n|\Z)", text)
    if not match:
        return {}, text
    meta: dict[str, str] = {}
    for line in match.group(1).splitlines():
        if not line.strip():
            continue
        key, sep, value = line.partition(":")
        if not sep or not re.fullmatch(r"\s*[A-Za-z_][\w-]*\s*", key):
            return {}, text  # not front matter after all (e.g. a markdown rule)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        if key.strip().lower() in FRONT_MATTER_KEYS:
            meta[key.strip().lower()] = value
    return meta, text[match.end():]


def _title_from_line(line: str, markdown: bool) -> str:
    title = line.strip()
    if markdown:
        title = title.lstrip("#").strip() or title
    if len(title) > MAX_TITLE_CHARS:
        title = title[:MAX_TITLE_CHARS].rstrip() + "…"
    return title


# ---------------------------------------------------------------- datelines and dates

_AR_DIGITS = str.maketrans("٠١٢٣٤٥٦٧٨٩۰۱۲۳۴۵۶۷۸۹", "01234567890123456789")
_MONTHS_AR = {
    1: ["كانون الثاني", "كانون ثاني", "يناير"],
    2: ["شباط", "فبراير"],
    3: ["آذار", "مارس"],
    4: ["نيسان", "أبريل", "إبريل"],
    5: ["أيار", "مايو"],
    6: ["حزيران", "يونيو", "يونيه"],
    7: ["تموز", "يوليو", "يوليه"],
    8: ["آب", "أغسطس"],
    9: ["أيلول", "سبتمبر"],
    10: ["تشرين الأول", "تشرين أول", "أكتوبر"],
    11: ["تشرين الثاني", "تشرين ثاني", "نوفمبر"],
    12: ["كانون الأول", "كانون أول", "ديسمبر"],
}
_MONTHS_EN = ["january", "february", "march", "april", "may", "june", "july", "august", "september",
              "october", "november", "december"]
_MONTHS: dict[str, int] = {normalize(name): n for n, names in _MONTHS_AR.items() for name in names}
_MONTHS.update({name: n for n, name in enumerate(_MONTHS_EN, 1)})
_MONTHS.update({name[:3]: n for n, name in enumerate(_MONTHS_EN, 1)})
_MONTHS["sept"] = 9
_DATELINE = re.compile(r"\(\s*(?P<outlet>[^()\n]+?)\s*[-–—]\s*(?P<date>[^()\n\-–—]+?)\s*\)")


# an English wire dateline: "MOSCOW, 10 October 2020 (Desk Wire) -", "WASHINGTON (Reuters) —" (place in capitals)
_DATELINE_EN = re.compile(r"(?P<place>[^\W\d_][^\W\d_ .'’/-]{0,30}(?:[ .'’/-]+[^\W\d_]{1,30}){0,4})\.?\s*"
                          r"(?:,\s*(?P<date>[^()\n]{3,40}?))?\s*\((?P<outlet>[^()\n]{2,60}?)\)\s*[-–—:]")
# a date written out in English (or ISO) in a byline or date line: "Oct. 10, 2020", "10 October 2020"
_DATE_EN = re.compile(r"(?<!\w)(?:\d{1,2}\s+[A-Za-z]{3,9}\.?,?\s+\d{4}|[A-Za-z]{3,9}\.?\s+\d{1,2}(?:st|nd|rd|th)?,?"
                      r"\s+\d{4}|\d{4}-\d{2}-\d{2})(?!\w)")
DATE_LINE_CHARS = 80  # a line this short near the top that holds a date is a date line ("Updated Oct. 10, 2020")


def find_dateline(text: str) -> tuple[str | None, str | None]:
    """(outlet, ISO date) from a ``(OUTLET / AGENCY - 28 سبتمبر 2020ء)`` dateline at the start of the first
    paragraph after the title (or of the first line, when the text has no title line); else from an English
    wire dateline (``MOSCOW, 10 October 2020 (Desk Wire) -``, ``WASHINGTON (Reuters) -``) at the start of one
    of the first lines, its date, when it has none, from a short date line near the top (``Oct. 10, 2020``),
    which alone gives the date too."""
    lines = _nonblank_lines(text, 2)
    for line in reversed(lines):
        match = _DATELINE.match(line.strip())
        if match:
            published = parse_date(match.group("date"))
            if published:
                outlet = match.group("outlet").split("/")[-1].strip()
                return outlet or None, published
    return _english_dateline(_nonblank_lines(text, 6))


def _english_dateline(lines: list[str]) -> tuple[str | None, str | None]:
    outlet = published = None
    for line in lines:
        match = _DATELINE_EN.match(line.strip())
        if match and match.group("place").isupper():
            outlet = match.group("outlet").strip() or None
            published = parse_date(match.group("date") or "")
            break
    if published is None:  # not in the title line: a headline's date is the event's
        published = next((d for d in map(_date_in_line, lines[1:]) if d), None)
    return outlet, published


def _date_in_line(line: str) -> str | None:
    """The ISO date a short line near the top of an article holds ("Published Oct. 10, 2020 10:31 GMT"); a line
    that ends as a sentence does is a short paragraph, not a date line."""
    line = line.strip()
    if len(line) > DATE_LINE_CHARS or re.search(r"[.!?؟…]['\"”’»)]*$", line) and not re.search(r"\d{4}\.?$", line):
        return None
    for match in _DATE_EN.finditer(line):
        published = parse_date(re.sub(r"(?<=\d)(?:st|nd|rd|th)\b", "", match.group()))
        if published:
            return published
    return None


def kept_date(value: str | None, origin: str) -> str | None:
    """An article's ``published`` value that is not a date newsdesk understands: kept as it is (shown, never
    filtered on: no numeric date), with a warning."""
    if not value or not value.strip():
        return None
    log.warning("%s: the published date %r is not understood; kept as text (date filters will not match it)",
                origin or "an article", value.strip())
    return value.strip()


def _nonblank_lines(text: str, n: int) -> list[str]:
    """The first ``n`` lines of ``text`` that are not blank (without splitting all of a long text)."""
    out: list[str] = []
    pos = 0
    while len(out) < n and pos <= len(text):
        end = text.find("\n", pos)
        end = len(text) if end < 0 else end
        if not text[pos:end].isspace() and end > pos:
            out.append(text[pos:end])
        pos = end + 1
    return out


def parse_date(value: str) -> str | None:
    """An ISO ``YYYY-MM-DD`` date from "2020-09-28", "28 سبتمبر 2020ء", "28 أيلول/سبتمبر ٢٠٢٠م",
    "28 September 2020", "Sep 28, 2020"…; None when it is not a date."""
    text = value.translate(_AR_DIGITS).strip()
    text = re.sub(r"\s*(?:ء|م|AD)\.?$", "", text).strip()
    iso = re.match(r"(\d{4})-(\d{1,2})-(\d{1,2})(?:$|[T ])", text)
    if iso:
        return _iso(int(iso.group(1)), int(iso.group(2)), int(iso.group(3)))
    # RFC 2822 (e-mail, RSS): "Sat, 10 Oct 2020 08:00:00 GMT", the date as written
    rfc = re.fullmatch(r"(?:[A-Za-z]{3},\s*)?(\d{1,2}\s+[A-Za-z]{3,9}\.?\s+\d{4})\s+\d{1,2}:\d{2}(?::\d{2})?"
                       r"(?:\s+\S+)?", text)
    if rfc:
        text = rfc.group(1)
    match = re.fullmatch(r"(\d{1,2})\.?\s+(.+?),?\s+(\d{4})", text)
    if match:
        day, month, year = match.group(1), match.group(2), match.group(3)
    else:
        match = re.fullmatch(r"(.+?)\.?\s+(\d{1,2}),?\s+(\d{4})", text)
        if not match:
            return None
        month, day, year = match.group(1), match.group(2), match.group(3)
    number = _month_number(month)
    return _iso(int(year), number, int(day)) if number else None


def _month_number(name: str) -> int | None:
    for part in [name, *name.split("/")]:
        key = normalize(part).lower().rstrip(".")
        if key in _MONTHS:
            return _MONTHS[key]
    return None


def _iso(year: int, month: int, day: int) -> str | None:
    try:
        return dt.date(year, month, day).isoformat()
    except ValueError:
        return None


def guess_lang(text: str) -> str | None:
    """"ar" when most letters are Arabic script, "en" when most are Latin, else None."""
    arabic = latin = total = 0
    for c in text[:20000]:
        if not c.isalpha():
            continue
        total += 1
        if "\u0600" <= c <= "\u06ff" or "\u0750" <= c <= "\u077f" or "\u08a0" <= c <= "\u08ff" \
                or "\ufb50" <= c <= "\ufdff" or "\ufe70" <= c <= "\ufeff":
            arabic += 1
        elif c < "\u0250":
            latin += 1
    if total and arabic > total / 2:
        return "ar"
    if total and latin > total / 2:
        return "en"
    return None


# ---------------------------------------------------------------- HTML


def article_from_html(data: bytes, article_id: str | None, *, origin: str = "", base_url: str | None = None,
                      charset: str | None = None) -> Article:
    """The main text of an HTML page (menus, scripts, footers left out), with its title, canonical URL and date.
    ``article_id`` None → the canonical URL (else ``base_url``) is the id. For a fetched page (``base_url``) the
    canonical URL counts only when it is on the same site as ``base_url``: a page cannot name itself another
    site's article."""
    import trafilatura  # slow to import; only needed for HTML

    for name in ("trafilatura", "htmldate"):  # they log every page they give up on; we report failures
        logging.getLogger(name).setLevel(logging.CRITICAL)
    html = decode_text(data, charset or _meta_charset(data))
    try:
        doc = None
        for precise in (True, False):  # precision first: the default mode can mistake a menu for the article
            doc = trafilatura.bare_extraction(
                html, url=base_url, favor_precision=precise, with_metadata=True, include_comments=False,
                include_tables=True, date_extraction_params=_DATE_PARAMS)
            if doc is not None and _is_article(doc.text or "", html):
                break
            doc = None
    except Exception as exc:  # trafilatura/lxml failures on hostile markup
        raise InputError("the page could not be parsed as HTML") from exc
    if doc is None:
        raise InputError("no article text found in the page")
    paragraphs = [line.strip() for line in (doc.text or "").split("\n") if line.strip()]
    body = "\n\n".join(paragraphs)
    title = (doc.title or "").strip() or paragraphs[0]
    if not body.startswith(title):
        body = f"{title}\n\n{body}"
    outlet, date = find_dateline(body)
    url = _clean_url(doc.url) if doc.url and doc.url.startswith(("http://", "https://")) else None
    if base_url is not None and (url is None or not same_site(url, base_url)):
        url = base_url
    return Article(id=article_id or url or origin, title=_title_from_line(title, False), text=body, url=url,
                   source=(doc.sitename or "").strip() or outlet, published=date or parse_date(doc.date or ""),
                   lang=guess_lang(body), origin=origin)


_DATE_PARAMS = {"original_date": True, "extensive_search": False}


def _meta_charset(data: bytes) -> str | None:
    match = re.search(rb"<meta[^>]+charset\s*=\s*[\"']?([A-Za-z0-9_.:-]+)", data[:4096], re.IGNORECASE)
    return match.group(1).decode("ascii").lower() if match else None


def _is_article(text: str, html: str) -> bool:
    """False when the extracted text is (almost) only link texts, i.e. a menu or a list of headlines."""
    letters = sum(1 for c in text if c.isalpha())
    if letters < 20:
        return False
    from lxml import html as lxml_html

    try:
        tree = lxml_html.fromstring(re.sub(r"\A\s*<\?xml[^>]*>", "", html))
    except Exception:  # noqa: BLE001 — no tree, no links to discount
        return True
    links = sorted({" ".join(a.text_content().split()) for a in tree.iter("a")} - {""}, key=len, reverse=True)
    rest = " ".join(text.split())
    if links:  # whole link texts only, so a link "News" does not eat the word "Newsroom"
        rest = re.sub(r"(?<!\w)(?:" + "|".join(map(re.escape, links[:2000])) + r")(?!\w)", " ", rest)
    return sum(1 for c in rest if c.isalpha()) >= max(20, letters * 0.3)


# ---------------------------------------------------------------- JSON and JSON Lines


def _json_records(path: Path, root: str | None, settings: Settings) -> list[Article | Failure]:
    text = decode_text(read_limited(path, settings))
    out: list[Article | Failure] = []
    if path.suffix.lower() == ".jsonl":
        records: list[tuple[str, Any]] = []
        for number, line in enumerate(text.lstrip("\ufeff").splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append((f"{path}:{number}", json.loads(line)))
            except json.JSONDecodeError as exc:
                out.append(Failure(f"{path}:{number}", f"invalid JSON on line {number}: {exc.msg}"))
    else:
        try:
            data = json.loads(text.lstrip("\ufeff"))
        except json.JSONDecodeError as exc:
            raise InputError(f"invalid JSON on line {exc.lineno}: {exc.msg}") from exc
        items = data if isinstance(data, list) else [data]
        records = [(f"{path}:{n}" if isinstance(data, list) else str(path), item)
                   for n, item in enumerate(items, 1)]
    for where, record in records:
        out.append(_record_article(record, where, root))
    return out


def _record_article(record: Any, where: str, root: str | None) -> Article | Failure:
    """One JSON record; ``where`` ("file.jsonl:3") is both its origin and the source of its failure."""
    if not isinstance(record, dict):
        return Failure(where, "expected a JSON object with a \"text\" field")
    record_id = record.get("id")
    article_id = str(record_id).strip() if isinstance(record_id, (str, int)) and str(record_id).strip() else None
    raw = record.get("text")
    if not isinstance(raw, str) or not raw.strip():
        return Failure(where, "record has no text", article_id)
    body = _clean_text(raw)

    def field(name: str) -> str | None:
        value = record.get(name)
        return (str(value).strip() or None) if isinstance(value, (str, int, float)) else None

    title = field("title") or _title_from_line(_nonblank_lines(body, 1)[0], False)
    if not body.startswith(title):
        body = f"{title}\n\n{body}"
    outlet, date = find_dateline(body)
    published = field("published")
    return Article(
        id=article_id or hashlib.sha256(raw.encode("utf-8")).hexdigest()[:16], title=title, text=body,
        url=_clean_url(field("url")), source=field("source") or outlet,
        published=(parse_date(published) if published else None) or date or kept_date(published, where),
        lang=field("lang") or guess_lang(body), origin=where, root=root)
