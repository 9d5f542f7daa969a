"""The ``newsdesk`` command: a thin translator between the command line and the index / answer engine."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import traceback
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

from newsdesk.index.errors import NewsdeskError
from newsdesk.index.settings import Settings

from .answers import Answer
from .conversation import Conversations
from .i18n import t
from .render import describe_filters, format_answer_text, format_hit_text, printable, source_line
from .startup import start
from .ticker import streaming

log = logging.getLogger("newsdesk")

NOTHING_INDEXED = "No articles are indexed yet: run `newsdesk index PATH`."
INDEX, ENGINE = "newsdesk.index.service", "newsdesk.bot.engine"  # what a command imports (see startup)


def _questions(path: str) -> Iterator[str]:
    """One question per line; a JSON line gives its ``question`` (or ``question_en``) field."""
    try:
        lines = Path(path).read_text(encoding="utf-8-sig").splitlines()
    except OSError as exc:
        raise NewsdeskError(f"cannot read {path}: {exc.strerror}") from exc
    for line in lines:
        line = line.strip()
        if not line:
            continue
        if line.startswith("{"):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise NewsdeskError(f"{path}: a line starting with '{{' is not valid JSON") from None
            line = record.get("question") or record.get("question_en") or ""
        if line:
            yield line


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, not {value!r}")
    return number


def _print_json(data) -> None:
    print(json.dumps(data, ensure_ascii=False))


def _index(settings: Settings):
    from newsdesk.index.service import Index

    return Index(settings)


def _engine(settings: Settings):
    from .engine import Engine

    return Engine(settings)


def _question(words: list[str]) -> str:
    """The question given on the command line; an empty or blank one is an error, like a missing one."""
    if not words:
        raise NewsdeskError("give a QUESTION or --questions FILE")
    question = " ".join(words).strip()
    if not question:
        raise NewsdeskError("the question is empty")
    return question


def _waiting_note(settings: Settings) -> None:
    """In LLM mode, at a terminal: say that the answer is being written (a local model can take a minute or
    two), on standard error, so that the answer itself stays alone on standard output."""
    if settings.llm_enabled and sys.stderr.isatty():
        where = settings.openai_base_url or "OpenAI"
        print(f"Asking {settings.llm_model} at {where} (up to {settings.llm_max_seconds:.0f} s; Ctrl-C cancels)…",
              file=sys.stderr, flush=True)


def _answer_text(engine, answer: Answer) -> str:
    """The answer as the terminal shows it; an abstention on an empty index says how to fill it (asked of the
    index only then: an abstention is rare, an extra count on every answer is not worth it)."""
    if answer.abstained and engine.index.is_empty():
        return NOTHING_INDEXED
    return format_answer_text(answer)


# -- commands -------------------------------------------------------------------------------------------------

def cmd_index(args, settings: Settings) -> int:
    index = _index(settings)
    report = index.index(args.sources, prune=args.prune, rebuild=args.rebuild, accurate=not args.fast,
                         on_wait=lambda: print(f"newsdesk: {index.waiting_note()}", file=sys.stderr, flush=True))
    if args.json:
        _print_json(report.to_json())
    else:
        print(f"{report.added} added, {report.updated} updated, {report.unchanged} unchanged, "
              f"{report.removed} removed, {len(report.failed)} failed; {report.chunks} passages written "
              f"in {report.seconds:.1f} s")
        for failure in report.failed:
            print(f"  failed: {printable(failure.source)}: {printable(failure.error)}")
    return 2 if report.failed else 0


def _now(args):
    """The moment "yesterday" and "last week" are relative to: the hidden ``--now`` (for tests), else None
    (the current time)."""
    from newsdesk.index.dates import parse_now

    return parse_now(args.now) if args.now else None


def _filters(args):
    """The ``--since``/``--until``/``--source`` options as ``Filters`` (a bad date: a one-line error)."""
    from newsdesk.index.dates import Filters, parse_day, today_of

    today = today_of(_now(args))
    dates = {}
    for name in ("since", "until"):
        value = getattr(args, name)
        try:
            dates[name] = parse_day(value, today, end=name == "until") if value else None
        except NewsdeskError as exc:
            raise NewsdeskError(f"--{name}: {exc}") from None
    if dates["since"] and dates["until"] and dates["since"] > dates["until"]:
        raise NewsdeskError(f"--since {dates['since']} is after --until {dates['until']}")
    source = args.source.strip() if args.source and args.source.strip() else None
    return Filters(since=dates["since"], until=dates["until"], source=source)


def _search(index, query: str, args, filters):
    """``index.search`` for ``query``, read for filters as a question is (``since:``, "yesterday"…)."""
    from newsdesk.index.dates import parse_question, today_of

    asked = parse_question(query, today_of(_now(args)))
    filters = filters.merged(asked.filters)
    return index.search(asked.text, args.k, filters), filters


def cmd_search(args, settings: Settings) -> int:
    index = _index(settings)
    filters = _filters(args)
    if args.questions:
        for question in _questions(args.questions):
            hits, _ = _search(index, question, args, filters)
            _print_json({"question": question, "hits": [h.to_json() for h in hits]})
        return 0
    if args.query is None:
        raise NewsdeskError("give a QUERY or --questions FILE")
    query = args.query.strip()
    if not query:
        raise NewsdeskError("the query is empty")
    hits, filters = _search(index, query, args, filters)
    if args.json:
        _print_json({"question": query, "hits": [h.to_json() for h in hits]})
    elif not hits and filters.active and not index.is_empty():
        print(t("filter.none", "en", what=describe_filters(filters)))
    elif not hits:
        print(NOTHING_INDEXED)
    else:
        for hit in hits:
            print(format_hit_text(hit))
    return 0


def cmd_stats(args, settings: Settings) -> int:
    stats = _index(settings).stats()
    if args.json:
        _print_json(stats)
    else:
        acc = stats["accurate"]
        print(f"articles: {stats['articles']}\npassages: {stats['chunks']}\nembedder: {stats['embedder']}\n"
              f"store: {stats['store']}\naccurate vectors: {acc['passages']} of {stats['chunks']} passages "
              f"({acc['model']})")
        if stats.get("languages"):  # articles per language, most first
            print("languages: " + ", ".join(f"{lang} {n}" for lang, n in stats["languages"].items()))
        _print_feed_stats(stats.get("feeds") or [])
    return 0


def _stories(rows: list[dict]) -> list[list[dict]]:
    """``list``'s rows by story (their ``group``): each story's head (its earliest copy) first, then the other
    copies by date; stories in the order of their first row."""
    stories: dict[str, list[dict]] = {}
    for row in rows:
        stories.setdefault(row.get("group") or row["id"], []).append(row)
    return [sorted(story, key=lambda r: (r["id"] != group, r["published"] or "", r["id"]))
            for group, story in stories.items()]


def cmd_list(args, settings: Settings) -> int:
    rows = _index(settings).list_articles()
    if args.json:
        _print_json(rows)
        return 0
    for story in _stories(rows):  # near-duplicates: the copies of a story under its earliest one
        for n, row in enumerate(story):
            meta = ", ".join(x for x in (row["source"], row["published"], row.get("lang")) if x)
            print(("" if n == 0 else "  also: ") + f"{row['id']}  {row['title'] or ''}" + (f" — {meta}" if meta else "")
                  + f"  ({row['chunks']} passages)")
    if not rows:
        print(NOTHING_INDEXED)
    return 0


def cmd_ask(args, settings: Settings) -> int:
    filters, now = _filters(args), _now(args)
    if args.questions:
        engine = _engine(settings)

        async def run_all():
            try:
                for question in _questions(args.questions):
                    _print_json((await engine.ask(question, k=args.k, filters=filters, now=now)).to_json())
                    sys.stdout.flush()
            finally:
                await engine.aclose()
        asyncio.run(run_all())
        return 0
    question = _question(args.question)
    engine = _engine(settings)
    _waiting_note(settings)
    with streaming(settings.llm_enabled) as progress:  # at a terminal: the answer as it is written, then erased
        answer = engine.ask_sync(question, k=args.k, filters=filters, now=now, on_progress=progress)
    if args.json:
        _print_json(answer.to_json())
    else:
        print(_answer_text(engine, answer))
    return 0


CHAT_HELP = """/help      this list
/sources   the passages behind the last answer
/new       start a new conversation (forget the earlier questions)
/quit      leave (also /exit, Ctrl-D or Ctrl-C at the prompt)
Anything else is a question; Ctrl-C while it is being answered cancels it."""
TERMINAL = 0  # the conversation key of the terminal session


class _Quit(Exception):
    """Leave the chat."""


def _chat_command(line: str, conversations: Conversations) -> None:
    """A line starting with ``/``: a chat command, never a question. Raises ``_Quit`` to leave."""
    command = line.split()[0].lower()
    if command in {"/quit", "/exit"}:
        raise _Quit
    if command == "/help":
        print(CHAT_HELP)
    elif command == "/new":
        conversations.reset(TERMINAL)
        print("Starting a new conversation.")
    elif command == "/sources":
        _print_sources(conversations.last(TERMINAL))
    else:
        print(f"Unknown command {command}: try /help.")


def _print_sources(last: Answer | None) -> None:
    """Each passage of the last answer once, under the numbers of the citations it backs."""
    if last is None or not last.citations:
        print("No sources yet.")
        return
    passages: dict[str, list] = {}
    for c in last.citations:
        passages.setdefault(c.chunk_id or f"{c.article_id}:{c.start}", []).append(c)
    for cited in passages.values():
        c = cited[0]
        print(f"{''.join(f'[{x.n}]' for x in cited)} {source_line(c)}\n{c.passage}\n")


def _read_line() -> str:
    """The next line typed at the prompt; ``_Quit`` at end of input (Ctrl-D) or on Ctrl-C."""
    try:
        return input("> ")
    except (EOFError, KeyboardInterrupt):
        print()
        raise _Quit from None


def _chat_question(runner: asyncio.Runner, engine, conversations: Conversations, question: str) -> None:
    """Answer one question of the chat, read with the conversation so far. Ctrl-C while it runs cancels it:
    the runner cancels the task and raises KeyboardInterrupt, and the chat goes on."""
    _waiting_note(engine.settings)
    try:
        with streaming(engine.settings.llm_enabled) as progress:
            answer = runner.run(engine.ask(question, conversations.history(TERMINAL), on_progress=progress))
    except KeyboardInterrupt:
        print("(cancelled)")
        return
    except NewsdeskError as exc:
        print(f"error: {exc}")
        return
    conversations.remember(TERMINAL, question, answer)
    print(_answer_text(engine, answer))


def cmd_chat(args, settings: Settings) -> int:
    """The terminal conversation. The prompt is read on the main thread, so that Ctrl-C there quits at once;
    the questions run on one long-lived event loop (``asyncio.Runner``: the language model client's
    connections are kept from one question to the next)."""
    if sys.stdin.isatty():
        import readline  # noqa: F401 - line editing and history for input()
    engine = _engine(settings)
    conversations = Conversations.from_settings(settings, scope="chat")  # kept for `chat --resume`
    print("Ask about the indexed articles. /help lists the commands, /quit leaves.")
    if not args.resume:
        conversations.reset(TERMINAL)  # a terminal starts blank: so does its conversation, unless asked
    elif earlier := conversations.history(TERMINAL):
        print(f"Continuing the conversation ({len(earlier)} earlier question(s)); /new starts a new one.")
    else:
        print("No recent conversation to continue: starting a new one.")
    with asyncio.Runner() as runner:
        try:
            while True:
                line = _read_line().strip()
                if line.startswith("/"):
                    _chat_command(line, conversations)
                elif line:
                    _chat_question(runner, engine, conversations, line)
        except _Quit:
            pass
        finally:
            runner.run(engine.aclose())
    return 0


# -- feeds (index.feeds) -----------------------------------------------------------------------------------------

def _when(timestamp: float | None) -> str:
    """A poll time as the terminal shows it (UTC, to the second)."""
    import datetime as dt

    if not timestamp:
        return "never"
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _feed_failure(row: dict) -> str:
    """A failing feed's state: the last error, when, how many polls in a row, when it is tried next."""
    return (f"{printable(row['last_error'] or '')} ({row['failures']} failed poll(s) in a row, last at "
            f"{_when(row['last_error_at'])}; next try {_when(row['retry_at']) if row['retry_at'] else 'next poll'})")


def _print_feed_stats(rows: list[dict]) -> None:
    if not rows:
        return
    failing = [r for r in rows if r["failures"]]
    print(f"feeds: {len(rows)} listed, {len(failing)} failing")
    for row in failing:
        print(f"  failing: {printable(row['url'])}: {_feed_failure(row)}")


def cmd_feeds(args, settings: Settings) -> int:
    from newsdesk.index.feeds import FeedList, summary

    feeds = FeedList(settings.home)
    if args.action in ("add", "remove") and not args.urls:
        raise NewsdeskError(f"give the URL of the feed to {args.action}")
    if args.action == "add":
        for url in args.urls:
            done = feeds.add(url)
            print(f"{'added' if done else 'already listed'}: {printable(url.strip())}")
        print("`newsdesk watch` (or the bot) polls the listed feeds.")
        return 0
    if args.action == "remove":
        missing = [url for url in args.urls if not feeds.remove(url)]
        for url in args.urls:
            print(f"{'not listed' if url in missing else 'removed'}: {printable(url.strip())}"
                  + ("" if url in missing else " (its articles stay indexed)"))
        return 1 if missing else 0
    rows = summary(settings.home)
    if args.json:
        _print_json(rows)
    elif not rows:
        print("No feeds are listed: add one with `newsdesk feeds add URL`.")
    for row in rows if not args.json else ():
        state = f"failing: {_feed_failure(row)}" if row["failures"] else f"last polled {_when(row['last_ok'])}"
        title = f"  {printable(row['title'])}" if row["title"] else ""
        print(f"{printable(row['url'])}{title} — {row['items']} items; {state}")
    return 0


def _poll_line(result) -> str:
    """One feed's poll as ``watch`` prints it."""
    url = printable(result.url)
    if result.outcome == "not modified":
        removed = result.report.removed if result.report is not None else 0
        return f"{url}: not modified" + (f"; {removed} removed" if removed else "")
    if result.outcome in ("failed", "waiting"):
        verb = "failed" if result.outcome == "failed" else "still failing, not tried now"
        return f"{url}: {verb}: {printable(result.error or '')} ({result.failures} in a row; next try " \
               f"{_when(result.retry_at) if result.retry_at else 'next poll'})"
    r = result.report
    line = (f"{url}: {r.added} added, {r.updated} updated, {r.unchanged} unchanged, {r.removed} removed, "
            f"{len(r.failed)} failed")
    return "\n".join([line, *(f"  failed: {printable(f.source)}: {printable(f.error)}" for f in r.failed)])


def cmd_watch(args, settings: Settings) -> int:
    """Poll the listed feeds until SIGINT/SIGTERM (or once): each stops the watch between two feeds."""
    import signal

    from newsdesk.index.feeds import FeedList, Watcher

    if not FeedList(settings.home).load():
        raise NewsdeskError("no feeds are listed: add one with `newsdesk feeds add URL`")
    interval = settings.feed_interval if args.interval is None else args.interval
    watcher = Watcher(_index(settings), interval=interval, prune=args.prune, accurate=not args.fast)
    caught: list[int] = []

    def on_signal(signum, _frame) -> None:
        caught.append(signum)
        watcher.stop()

    def show(result) -> None:
        _print_json(result.to_json()) if args.json else print(_poll_line(result))
        sys.stdout.flush()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        results = watcher.run(once=args.once, on_result=show)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if caught:
        print("newsdesk: watch stopped", file=sys.stderr)
        return 130 if caught[0] == signal.SIGINT else 0
    return 2 if any(r.outcome in ("failed", "waiting") for r in results) else 0


def cmd_bot(args, settings: Settings) -> int:
    from .telegram_bot import run_bot

    return run_bot(settings, webhook_url=args.webhook_url, webhook_port=args.webhook_port,
                   webhook_secret=args.webhook_secret)


def cmd_feedback(args, settings: Settings) -> int:
    from .feedback import format_feedback, latest, read_records, summarise

    votes = latest(read_records(settings.feedback_path))
    if args.json:
        _print_json({"file": str(settings.feedback_path), "votes": votes, "summary": summarise(votes)})
    else:
        print(format_feedback(votes, summarise(votes)))
    return 0


def cmd_eval(args, settings: Settings) -> int:
    from .evaluate import run_eval

    return run_eval(args, settings)


# -- parser ---------------------------------------------------------------------------------------------------

def _version() -> str:
    try:
        return metadata.version("newsdesk")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def _filter_options(p: argparse.ArgumentParser) -> None:
    """``--since``, ``--until``, ``--source`` (and the hidden ``--now`` the tests set the clock with)."""
    p.add_argument("--since", metavar="DATE", help="only articles published on or after DATE (YYYY-MM-DD)")
    p.add_argument("--until", metavar="DATE", help="only articles published on or before DATE (YYYY-MM-DD)")
    p.add_argument("--source", metavar="NAME", help="only articles of this outlet (case-insensitive)")
    p.add_argument("--now", help=argparse.SUPPRESS)


def build_parser() -> argparse.ArgumentParser:
    """The parser. ``--home`` and ``-v`` are accepted before the command and after it: each subcommand has
    them too, under their own names (``sub_home``, ``sub_verbose``) so that its defaults cannot overwrite
    what was given before the command."""
    parser = argparse.ArgumentParser(prog="newsdesk", description="Ask questions about news articles in any "
                                     "language; answers cite verbatim quotes.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    common = argparse.ArgumentParser(add_help=False)
    for target, dest in ((parser, ""), (common, "sub_")):
        target.add_argument("--home", dest=f"{dest}home", metavar="DIR",
                            help="where the embedded index lives (overrides NEWSDESK_HOME)")
        target.add_argument("--verbose", "-v", dest=f"{dest}verbose", action="count", default=0,
                            help="log more: -v INFO, -vv DEBUG (NEWSDESK_LOG_LEVEL sets the level too)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, func, library: str | None, **kwargs) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], **kwargs)
        p.set_defaults(func=func, library=library)
        return p

    p = command("index", cmd_index, INDEX, help="index files, folders (recursively) and http(s) URLs")
    p.add_argument("sources", nargs="+", metavar="PATH_OR_URL")
    p.add_argument("--prune", action="store_true", help="remove articles that disappeared from the folders given")
    p.add_argument("--rebuild", action="store_true", help="start the index afresh")
    p.add_argument("--fast", action="store_true", help="stage 1 only: searchable now, accurate vectors later")
    p.add_argument("--json", action="store_true", help="print one JSON summary")

    p = command("search", cmd_search, INDEX, help="show the passages that best match a query")
    p.add_argument("query", nargs="?")
    p.add_argument("--questions", metavar="FILE", help="one query per line; one JSON line per query")
    p.add_argument("--k", type=_positive_int, default=5, help="how many passages to show (default 5)")
    p.add_argument("--json", action="store_true")
    _filter_options(p)

    p = command("ask", cmd_ask, ENGINE, help="answer a question with verified citations")
    p.add_argument("question", nargs="*")
    p.add_argument("--questions", metavar="FILE", help="one question per line; one JSON line per question")
    p.add_argument("--k", type=_positive_int, default=None, help="passages to retrieve (default NEWSDESK_TOP_K)")
    p.add_argument("--json", action="store_true")
    _filter_options(p)

    p = command("chat", cmd_chat, ENGINE, help="a conversation in the terminal, with follow-up questions")
    p.add_argument("--resume", action="store_true", help="continue the last conversation (within "
                   "NEWSDESK_HISTORY_TTL_SECONDS), even after a restart")

    p = command("stats", cmd_stats, INDEX, help="how many articles and passages, which embedder and store")
    p.add_argument("--json", action="store_true")
    p = command("list", cmd_list, INDEX, help="the indexed articles")
    p.add_argument("--json", action="store_true")

    p = command("feeds", cmd_feeds, None, help="the RSS/Atom feeds `watch` and the bot keep indexed")
    p.add_argument("action", choices=("list", "add", "remove"), nargs="?", default="list")
    p.add_argument("urls", nargs="*", metavar="URL")
    p.add_argument("--json", action="store_true")
    p = command("watch", cmd_watch, INDEX, help="poll the listed feeds and index their new items")
    p.add_argument("--interval", type=float, metavar="S", default=None,
                   help="seconds between polls (default NEWSDESK_FEED_INTERVAL, 900)")
    p.add_argument("--once", action="store_true", help="poll every feed once, then stop")
    p.add_argument("--prune", action="store_true", help="remove the articles of items that left their feed")
    p.add_argument("--fast", action="store_true", help="stage 1 only: searchable now, accurate vectors later")
    p.add_argument("--json", action="store_true", help="one JSON line per feed polled")

    p = command("bot", cmd_bot, "newsdesk.bot.telegram_bot", help="run the Telegram bot (TELEGRAM_BOT_TOKEN)")
    p.add_argument("--webhook-url", help="use a webhook at this public URL instead of long polling")
    p.add_argument("--webhook-port", type=int, help="port the webhook server listens on")
    p.add_argument("--webhook-secret", help="secret token Telegram sends with each webhook call")

    p = command("feedback", cmd_feedback, None, help="the 👍/👎 votes on the bot's answers, and their summary")
    p.add_argument("--json", action="store_true", help="one JSON object: the votes and the summary")

    p = command("eval", cmd_eval, "newsdesk.bot.evaluate",
                help="measure retrieval (and answer) quality on a question set")
    p.add_argument("questions_file", metavar="QUESTIONS.jsonl")
    p.add_argument("--articles", metavar="DIR", help="index this folder into a scratch home first")
    p.add_argument("--use-index", action="store_true", help="use the current index instead")
    p.add_argument("--question-field", default=None)
    p.add_argument("--answer-field", default=None)
    p.add_argument("--assign", metavar="FILE", help="article -> language map (mixed corpora; default: a "
                   "mixed_assign.json inside or beside --articles)")
    p.add_argument("--k", type=_positive_int, default=10, help="passages per question (default 10)")
    p.add_argument("--fast", action="store_true", help="stage 1 only")
    p.add_argument("--answers", action="store_true", help="also ask every question and score the citations")
    p.add_argument("--json", action="store_true")
    return parser


# -- running --------------------------------------------------------------------------------------------------

def _silence_stdout() -> None:
    """After a closed pipe (``newsdesk list | head -1``): point standard output at /dev/null, so that the
    interpreter's final flush of what is still buffered does not fail again (the Python docs' advice on
    SIGPIPE)."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def _unexpected(exc: BaseException, command: str, verbose: int) -> int:
    """A bug (or a failure nobody mapped to a newsdesk error): its type in one line, the traceback only under
    ``-v``. Its message is never printed: a third-party message may say anything, secrets included."""
    if verbose:
        traceback.print_exception(exc, file=sys.stderr)
    print(f"newsdesk: error: unexpected {type(exc).__name__} in `newsdesk {command}`; "
          + ("the traceback is above" if verbose else "run with -v for details"), file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    """Run one command and return its exit status: 0 done; 1 it could not be done (a one-line error on
    standard error: a bad setting, an empty question, an unreachable store, a bug); 2 the command line does
    not parse (argparse's usage message), or ``index`` had sources that failed; 130 Ctrl-C; 141 standard
    output was closed early (``| head``). Safe to call many times in one process."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version, a usage error: argparse has printed what it had to say
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    home = args.sub_home or args.home
    verbose = args.verbose + args.sub_verbose
    try:
        settings = Settings.load(home=Path(home).expanduser() if home else None)
        start(settings, default_level="INFO" if args.command == "bot" else "WARNING", verbosity=verbose,
              library=args.library)
        log.info("newsdesk %s: %s, %s", _version(), args.command, settings.store_label)
        log.debug("settings: %r", settings)
        status = args.func(args, settings)
        sys.stdout.flush()
        return status
    except NewsdeskError as exc:
        print(f"newsdesk: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("newsdesk: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        _silence_stdout()
        return 141
    except Exception as exc:  # noqa: BLE001 - the one place a bug becomes one line instead of a traceback
        return _unexpected(exc, args.command, verbose)


if __name__ == "__main__":
    sys.exit(main())
