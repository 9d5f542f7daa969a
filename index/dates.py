"""Dates and outlets: the numeric date and outlet key stored with every article, the filters a question or the
command line asks for, and the phrases of a question that ask for them.

Stored (``Store.write_articles``): ``published_ts``, the article's date as a day number (days since 1970-01-01,
UTC; absent when the article has no date newsdesk understood, so no date filter matches it), and
``source_key``, its outlet folded for comparison (``source_key``: NFKC, Arabic diacritics and alef forms
unified, case folded, white space collapsed). Both are in the article's registry record, in the metadata of
each of its passages and of their stage-2 vectors, so that a search filters in the store query itself (a
Chroma ``where``, ``Filters.where``), never after it.

A question's phrases (``parse_question``), relative to ``today`` (one clock: the caller passes it):

- operators, in any language: ``since:2020-09-27``, ``until:…``, ``date:…`` (that day), ``source:Sputnik``,
  ``source:"Desk Wire"`` (also «…» and “…”); the search does not see them (``ParsedQuestion.text``);
- phrases in the question's language (English, Arabic, French, Spanish, German, Russian): "yesterday",
  "today" (English only, not after "even"/"still": "heute", "hoy", "сегодня" are as often "nowadays"), "this
  week", "last week" (the last seven days), "this month", "last month", "3 days ago", "on 28 September" (the
  most recent 28 September not after today when no year is given), "since 28 September", "until 1 October",
  and their equivalents ("أمس", "الأسبوع الماضي", "في 28 سبتمبر", "منذ 28 سبتمبر", "hier",
  "la semaine dernière", "le 28 septembre", "ayer", "el 28 de septiembre", "gestern", "am 28. September",
  "вчера", "28 сентября"…). They stay in the text the search sees (they are words of the question). A year or
  a month alone ("in 2015", "in May") is not read as a filter: in a question it is nearly always when the
  event happened, not when the article was published (21 of the 612 XQuAD dev questions have one, and
  filtering on it left them without an answer); ``date:2015`` or ``--since``/``--until`` ask for that;
- "latest", "most recent", "newest", "آخر الـ…", "أحدث", "dernières", "últimas noticias", "neueste",
  "последние новости"…:
  ``Filters.latest``, which makes the search prefer recent articles (``prefer_recent``).

Hand-written tables rather than ``dateparser`` (measured here: ``search_dates`` took 1-7 ms per question after a
0.28 s first call, these tables 0.07 ms): it gives a moment, not a period ("last week" is one day, 2020-10-03;
"in 2015" is 2015-10-10), and it reads dates into phrases that are not filters. Phrases are only looked for
in the question's languages (``newsdesk.index.language``: "hier" is "yesterday" in French, "here" in German);
English is always tried.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from .errors import InputError
from .language import detect, script
from .textnorm import normalize

EPOCH = dt.date(1970, 1, 1)
RECENCY_MARGIN = 0.5  # "latest": candidates within this much fused score (z units) of the best are equally good
_AR_DIGITS = str.maketrans("٠١٢٣٤٥٦٧٨٩۰۱۲۳۴۵۶۷۸۹", "01234567890123456789")

# ---------------------------------------------------------------- what is stored


def day_number(value: str | dt.date | None) -> int | None:
    """Days since 1970-01-01 of an ISO date ("2020-09-28", or the date part of an ISO timestamp) or a date;
    None for anything else (an article's date kept as text because it was not understood)."""
    if isinstance(value, dt.date):
        return (value - EPOCH).days
    if not value:
        return None
    match = re.match(r"(\d{4})-(\d{2})-(\d{2})(?:$|[T ])", value.strip())
    if not match:
        return None
    try:
        return (dt.date(int(match.group(1)), int(match.group(2)), int(match.group(3))) - EPOCH).days
    except ValueError:
        return None


def source_key(name: str | None) -> str | None:
    """An outlet's name folded for comparison: "Sputnik", " SPUTNIK " and "sputnik" are one key."""
    if not name:
        return None
    key = normalize(name).casefold().strip(" .,;:-–—\"'")
    return key or None


def filter_metadata(published: str | None, source: str | None) -> dict:
    """The metadata a search filters on, for an article with this date and outlet (keys absent when unknown)."""
    meta: dict = {}
    if (day := day_number(published)) is not None:
        meta["published_ts"] = day
    if (key := source_key(source)) is not None:
        meta["source_key"] = key
    return meta


# ---------------------------------------------------------------- filters


@dataclass(frozen=True)
class Filters:
    """Which articles a search may return: published from ``since`` to ``until`` (days included), by the
    outlet ``source`` (compared as ``source_key``); ``latest``: prefer recent ones (not a filter)."""

    since: dt.date | None = None
    until: dt.date | None = None
    source: str | None = None
    latest: bool = False

    @property
    def active(self) -> bool:
        """Whether anything is filtered out (``latest`` alone filters nothing)."""
        return self.since is not None or self.until is not None or self.source is not None

    def where(self) -> dict | None:
        """The Chroma ``where`` for these filters (registry records and passages carry the same keys), or None."""
        conditions: list[dict] = []
        if self.since is not None:
            conditions.append({"published_ts": {"$gte": day_number(self.since)}})
        if self.until is not None:
            conditions.append({"published_ts": {"$lte": day_number(self.until)}})
        if self.source is not None:
            conditions.append({"source_key": source_key(self.source) or ""})
        if not conditions:
            return None
        return conditions[0] if len(conditions) == 1 else {"$and": conditions}

    def merged(self, other: Filters | None) -> Filters:
        """These filters, with what ``other`` sets where these leave a field unset."""
        if other is None:
            return self
        return Filters(since=self.since or other.since, until=self.until or other.until,
                       source=self.source or other.source, latest=self.latest or other.latest)

    def describe(self) -> str:
        """The filters in a few words, for logs ("since 2020-09-27, until 2020-10-01, source 'Sputnik'")."""
        parts = [f"since {self.since}" if self.since else "", f"until {self.until}" if self.until else "",
                 f"source {self.source!r}" if self.source else "", "latest first" if self.latest else ""]
        return ", ".join(p for p in parts if p) or "none"


def prefer_recent(fused: Sequence[tuple[float, str]], days: dict[str, int | None]) -> list[tuple[float, str]]:
    """(score, passage id) best first, re-ordered for a "latest" question: the candidates about as good as the
    best (within RECENCY_MARGIN of its fused score, a z-score: about half a standard deviation of the
    candidates' scores) come newest first (``days``: passage id -> day number; undated ones after the dated),
    then the rest as they were. A recent article thus beats an older one about as good, never one clearly
    better."""
    if not fused:
        return []
    best = fused[0][0]
    tier = [x for x in fused if x[0] >= best - RECENCY_MARGIN]
    rest = [x for x in fused if x[0] < best - RECENCY_MARGIN]
    newest_first = sorted(tier, key=lambda x: (days.get(x[1]) is None, -(days.get(x[1]) or 0), -x[0]))
    return newest_first + rest


# ---------------------------------------------------------------- dates given by the user


def parse_day(value: str, today: dt.date, *, end: bool = False) -> dt.date:
    """A date a user typed (``--since``, ``since:``): "2020-09-27", "2020-09" or "2020" (its first day, or its
    last with ``end``), "27 September 2020", "Sep 27, 2020", "today", "yesterday". Raises InputError (one line)."""
    text = value.strip().translate(_AR_DIGITS)
    lowered = text.casefold()
    if lowered in ("today", "اليوم"):
        return today
    if lowered in ("yesterday", "أمس", "امس"):
        return today - dt.timedelta(days=1)
    if re.fullmatch(r"(?:19|20)\d\d", text):  # a year: its first day, or its last with ``end``
        return dt.date(int(text), 12, 31) if end else dt.date(int(text), 1, 1)
    month = re.fullmatch(r"(\d{4})-(\d{1,2})", text)
    if month:
        try:
            first = dt.date(int(month.group(1)), int(month.group(2)), 1)
        except ValueError:
            first = None
        if first is not None:
            return _month_end(first) if end else first
    from .loaders import parse_date  # the article dates' parser (Arabic and English forms)

    iso = parse_date(text)
    if iso is None:
        raise InputError(f"{value!r} is not a date (use YYYY-MM-DD, e.g. 2020-09-27)")
    return dt.date.fromisoformat(iso)


def today_of(now: dt.datetime | dt.date | None) -> dt.date:
    """The UTC date of ``now`` (None: the current time)."""
    if now is None:
        now = dt.datetime.now(dt.UTC)
    if isinstance(now, dt.datetime):
        return (now.astimezone(dt.UTC) if now.tzinfo else now).date()
    return now


def parse_now(value: str) -> dt.datetime:
    """A moment given as text ("2020-10-10", "2020-10-10T08:00:00+00:00"), UTC when no zone is given."""
    try:
        moment = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        raise InputError(f"{value!r} is not a date or time (use YYYY-MM-DD or an ISO time)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _month_end(first: dt.date) -> dt.date:
    following = dt.date(first.year + (first.month == 12), first.month % 12 + 1, 1)
    return following - dt.timedelta(days=1)


# ---------------------------------------------------------------- phrases of a question


@dataclass
class ParsedQuestion:
    """A question read for filters: ``text`` is what the search sees (the operators taken out)."""

    text: str
    filters: Filters
    phrases: list[str] = field(default_factory=list)  # what was understood, as written (for logs and tests)
    ignored: list[str] = field(default_factory=list)  # operator values that are not dates


@dataclass(frozen=True)
class _Language:
    months: tuple[tuple[str, ...], ...]  # per month, its names (any case form used after a day)
    relative: dict[str, str]  # phrase -> period name (see ``_period``)
    on: str  # the words before a date that mean "on that day" (a regex alternation)
    since: str
    until: str
    latest: str  # the words that ask for the latest news
    ago: str = ""  # "(\d+) days ago": a regex with one group
    day_suffix: str = ""


_LANGUAGES: dict[str, _Language] = {
    "en": _Language(
        months=(("january", "jan"), ("february", "feb"), ("march", "mar"), ("april", "apr"), ("may",),
                ("june", "jun"), ("july", "jul"), ("august", "aug"), ("september", "sept", "sep"),
                ("october", "oct"), ("november", "nov"), ("december", "dec")),
        relative={"today": "today", "yesterday": "yesterday", "this week": "this_week", "last week": "last_week",
                  "past week": "last_week", "this month": "this_month", "last month": "last_month"},
        on="on|of", since="since|after|from", until="until|till|before|up to",
        latest=r"latest|most recent|newest|recent news|last news", ago=r"(\d{1,3}) days? ago",
        day_suffix=r"(?:st|nd|rd|th)?"),
    "ar": _Language(
        months=(("يناير", "كانون الثاني"), ("فبراير", "شباط"), ("مارس", "آذار"), ("أبريل", "إبريل", "نيسان"),
                ("مايو", "أيار"), ("يونيو", "يونيه", "حزيران"), ("يوليو", "يوليه", "تموز"), ("أغسطس", "آب"),
                ("سبتمبر", "أيلول"), ("أكتوبر", "تشرين الأول"), ("نوفمبر", "تشرين الثاني"),
                ("ديسمبر", "كانون الأول")),
        relative={"أمس": "yesterday", "البارحة": "yesterday", "بالأمس": "yesterday", "الأسبوع الماضي": "last_week",
                  "الأسبوع الفائت": "last_week", "هذا الأسبوع": "this_week", "هذا الشهر": "this_month",
                  "الشهر الماضي": "last_month", "الشهر الفائت": "last_month"},
        on="في|يوم|بتاريخ", since="منذ|بعد|من", until="حتى|قبل|إلى",
        latest=r"آخر ال|اخر ال|أحدث|احدث", ago=r"قبل (\d{1,3}) (?:أيام|ايام|يوما|يوم)"),
    "fr": _Language(
        months=(("janvier",), ("février", "fevrier"), ("mars",), ("avril",), ("mai",), ("juin",), ("juillet",),
                ("août", "aout"), ("septembre",), ("octobre",), ("novembre",), ("décembre", "decembre")),
        relative={"hier": "yesterday", "cette semaine": "this_week",
                  "la semaine dernière": "last_week", "la semaine passée": "last_week", "ce mois-ci": "this_month",
                  "le mois dernier": "last_month"},
        on="le", since="depuis le|depuis|après le", until="jusqu'au|avant le",
        latest=r"dernières nouvelles|plus récents?|plus récentes?|dernières", ago=r"il y a (\d{1,3}) jours?",
        day_suffix=r"(?:er)?"),
    "es": _Language(
        months=(("enero",), ("febrero",), ("marzo",), ("abril",), ("mayo",), ("junio",), ("julio",), ("agosto",),
                ("septiembre", "setiembre"), ("octubre",), ("noviembre",), ("diciembre",)),
        relative={"ayer": "yesterday", "esta semana": "this_week", "la semana pasada": "last_week",
                  "este mes": "this_month", "el mes pasado": "last_month"},
        on="el", since="desde el|desde|después del", until="hasta el|antes del",
        latest=r"últimas noticias|más recientes?|lo último", ago=r"hace (\d{1,3}) días?"),
    "de": _Language(
        months=(("januar", "jänner"), ("februar",), ("märz", "maerz"), ("april",), ("mai",), ("juni",), ("juli",),
                ("august",), ("september",), ("oktober",), ("november",), ("dezember",)),
        relative={"gestern": "yesterday", "diese woche": "this_week", "dieser woche": "this_week",
                  "letzte woche": "last_week", "letzten woche": "last_week", "vergangene woche": "last_week",
                  "vergangenen woche": "last_week", "diesen monat": "this_month", "diesem monat": "this_month",
                  "letzten monat": "last_month", "vergangenen monat": "last_month"},
        on="am", since="seit dem|seit|nach dem", until="bis zum|bis|vor dem",
        latest=r"neuesten?|aktuellsten?|jüngsten", ago=r"vor (\d{1,3}) tagen", day_suffix=r"\.?"),
    "ru": _Language(
        months=(("января",), ("февраля",), ("марта",), ("апреля",), ("мая",), ("июня",), ("июля",), ("августа",),
                ("сентября",), ("октября",), ("ноября",), ("декабря",)),
        relative={"вчера": "yesterday", "на этой неделе": "this_week",
                  "на прошлой неделе": "last_week", "в этом месяце": "this_month", "в прошлом месяце": "last_month"},
        on="", since="с|после", until="до|по",
        latest=r"последние новости|последних новостях|свежие новости|новейшие",
        ago=r"(\d{1,3}) (?:дня|дней|день) назад"),
}


def _fold(text: str) -> str:
    """What phrases are matched against: normalised (alef forms, diacritics), case folded, Western digits."""
    return normalize(text).casefold().translate(_AR_DIGITS)


def _alternation(words) -> str:
    return "|".join(re.escape(_fold(w)) for w in sorted(words, key=len, reverse=True))


_W = r"(?<![\w])"  # a word starts here
_E = r"(?![\w])"  # a word ends here
_AR_PREFIX = r"(?:[وفب]?)"  # Arabic conjunctions and prepositions are written joined to the next word


@dataclass(frozen=True)
class _Compiled:
    relative: re.Pattern
    periods: dict[str, str]
    date: re.Pattern
    latest: re.Pattern
    ago: re.Pattern | None
    month_number: dict[str, int]


def _compile(code: str, spec: _Language) -> _Compiled:
    prefix = _AR_PREFIX if code == "ar" else ""
    names = {_fold(n): i for i, forms in enumerate(spec.months, 1) for n in forms}
    month = _alternation(names)

    def lead() -> str:  # the words before a date, in named groups that say which kind of date it is
        groups = [f"(?P<{kind}>{_alternation(words.split('|'))})" for kind, words in
                  (("on", spec.on), ("since", spec.since), ("until", spec.until)) if words]
        if not spec.on:  # Russian says the bare date for "on that day": "28 сентября"
            return f"{_W}{prefix}(?:(?:{'|'.join(groups)})\\s+)?(?P<on>)"
        return f"{_W}{prefix}(?:{'|'.join(groups)})\\s+"

    day = r"(?P<day>\d{1,2})" + spec.day_suffix
    year = r"(?:,?\s+(?:de\s+)?(?P<year>\d{4}))?"
    dmy = rf"{day}\s+(?:de\s+)?(?P<month>{month}){_E}{year}"
    mdy = rf"(?P<month2>{month})\.?\s+(?P<day2>\d{{1,2}})(?:st|nd|rd|th)?{_E}(?:,?\s+(?P<year2>\d{{4}}))?"
    iso = r"(?P<iso>\d{4}-\d{1,2}-\d{1,2})"
    forms = f"{iso}|{dmy}" + (f"|{mdy}" if code == "en" else "")
    date = re.compile(f"{lead()}(?:{forms})")
    return _Compiled(
        relative=re.compile(f"{_W}{prefix}(?P<phrase>{_alternation(spec.relative)}){_E}"),
        periods={_fold(k): v for k, v in spec.relative.items()},
        date=date,
        latest=re.compile(f"{_W}{prefix}(?:{_alternation(spec.latest.split('|'))})" + ("" if code == "ar" else _E)),
        ago=re.compile(f"{_W}{spec.ago}{_E}") if spec.ago else None,
        month_number=names,
    )


_COMPILED = {code: _compile(code, spec) for code, spec in _LANGUAGES.items()}
_STILL = re.compile(r"(?<!\w)(?:even|still|until|till|up to|to)\s+$")  # before "today": "even today", "to today"
_OPERATOR = re.compile(r"(?<!\S)(?P<key>since|until|date|source):(?:\"(?P<q1>[^\"]+)\"|«(?P<q2>[^»]+)»|"
                       r"“(?P<q3>[^”]+)”|(?P<bare>\S+))", re.IGNORECASE)


def question_languages(text: str) -> list[str]:
    """The languages whose phrases are looked for in ``text``: its script's (Arabic, Russian) or the detected
    one, and English."""
    found = {"Arab": "ar", "Cyrl": "ru"}.get(script(text)) or detect(text)
    return list(dict.fromkeys([found, "en"] if found in _LANGUAGES else ["en"]))


def parse_question(question: str, today: dt.date, languages: Sequence[str] | None = None) -> ParsedQuestion:
    """The filters ``question`` asks for (operators and phrases, relative to ``today``) and the text the search
    should see (the operators taken out). See the module docstring."""
    since: list[dt.date] = []
    until: list[dt.date] = []
    source: str | None = None
    phrases: list[str] = []
    ignored: list[str] = []

    def operator(match: re.Match) -> str:
        nonlocal source
        key = match.group("key").lower()
        value = next(v for v in (match.group("q1"), match.group("q2"), match.group("q3"), match.group("bare"))
                     if v is not None).strip()
        phrases.append(match.group(0))
        if key == "source":
            source = value
            return " "
        try:
            start = parse_day(value, today)
            end = parse_day(value, today, end=True)
        except InputError:
            ignored.append(value)
            return " "
        if key in ("since", "date"):
            since.append(start)
        if key in ("until", "date"):
            until.append(end)
        return " "

    text = " ".join(_OPERATOR.sub(operator, question).split()) if _OPERATOR.search(question) else question.strip()
    folded = _fold(text)
    latest = False
    for code in languages or question_languages(text):
        compiled = _COMPILED[code]
        taken = _phrases(compiled, folded, today, since, until, phrases)
        latest = latest or bool(compiled.latest.search(taken))
    filters = Filters(since=max(since) if since else None, until=min(until) if until else None,
                      source=source, latest=latest)
    return ParsedQuestion(text=text or question.strip(), filters=filters, phrases=phrases, ignored=ignored)


def strip_operators(text: str) -> str:
    """``text`` without its ``since:``/``until:``/``date:``/``source:`` operators."""
    return " ".join(_OPERATOR.sub(" ", text).split()) or text.strip()


def _phrases(compiled: _Compiled, folded: str, today: dt.date, since: list, until: list, phrases: list) -> str:
    """Add the periods the phrases of ``folded`` name to ``since``/``until``; returns the text left once they
    are taken out (where "latest" words are then looked for: "la semaine dernière" is not "dernières")."""

    def take(match: re.Match, first: dt.date | None, last: dt.date | None) -> None:
        phrases.append(match.group(0).strip())
        if first is not None:
            since.append(first)
        if last is not None:
            until.append(last)

    def relative(match: re.Match) -> str:
        if _STILL.search(match.string, 0, match.start()):  # "still visible even today": not "published today"
            return match.group(0)
        take(match, *_period(compiled.periods[match.group("phrase")], today))
        return " "

    def date(match: re.Match) -> str:
        day = _date(compiled, match, today)
        if day is None:
            return match.group(0)
        kind = "since" if match.group("since") else "until" if match.group("until") else "on"
        take(match, day if kind in ("on", "since") else None, day if kind in ("on", "until") else None)
        return " "

    def ago(match: re.Match) -> str:
        day = today - dt.timedelta(days=int(match.group(1)))
        take(match, day, day)
        return " "

    rest = compiled.relative.sub(relative, folded)
    rest = compiled.date.sub(date, rest)
    if compiled.ago is not None:
        rest = compiled.ago.sub(ago, rest)
    return rest


def _period(name: str, today: dt.date) -> tuple[dt.date, dt.date]:
    """The first and last day of a named period relative to ``today`` ("last_week": the last seven days)."""
    if name == "today":
        return today, today
    if name == "yesterday":
        day = today - dt.timedelta(days=1)
        return day, day
    if name == "this_week":
        return today - dt.timedelta(days=today.weekday()), today
    if name == "last_week":
        return today - dt.timedelta(days=7), today
    if name == "this_month":
        return today.replace(day=1), today
    if name == "last_month":
        last = today.replace(day=1) - dt.timedelta(days=1)
        return last.replace(day=1), last
    raise ValueError(name)


def _date(compiled: _Compiled, match: re.Match, today: dt.date) -> dt.date | None:
    """The day a date match names; a day and month without a year: the most recent one not after today."""
    groups = match.groupdict()
    if groups.get("iso"):
        try:
            return dt.date.fromisoformat("-".join(f"{int(p):02d}" for p in groups["iso"].split("-")))
        except ValueError:
            return None
    month_name = groups.get("month") or groups.get("month2")
    day = int(groups.get("day") or groups.get("day2"))
    year = groups.get("year") or groups.get("year2")
    number = compiled.month_number[month_name]
    try:
        if year:
            return dt.date(int(year), number, day)
        candidate = dt.date(today.year, number, day)
        return candidate if candidate <= today else candidate.replace(year=today.year - 1)
    except ValueError:
        return None

