"""The Telegram bot end to end: the real python-telegram-bot client, over real HTTP, against the fake Bot API
in tests/fake_telegram.py, with a real Engine (offline mode) on an index of the example article."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import html
import logging
import os
import re
import signal
import statistics
import subprocess
import threading
import time
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from newsdesk.bot import telegram_bot, telegram_render
from newsdesk.bot.answers import Answer, Citation, Sentence
from newsdesk.bot.engine import Engine
from newsdesk.bot.telegram_bot import RateLimiter, build_application, run_bot, safe_filename
from newsdesk.bot.telegram_render import LIMIT, answer_messages, split_html, units
from newsdesk.index.errors import ConfigError, StoreError
from tests.conftest import EXAMPLE, NEWSDESK, clean_env, free_port, make_settings
from tests.support import ChromaServer
from tests.fake_telegram import BOT_USERNAME, TOKEN, FakeTelegram

ARTICLE = EXAMPLE.read_text(encoding="utf-8")
WEAPONS = "What weapons did each side allege?"
SPOKESPERSON = "Who is the spokesperson of the Armenian Ministry of Defense?"
FOLLOW_UP = "and where did she publish her statement?"
ADMIN = 42
NEW_ARTICLE = ("Reykjavik opens a lunar greenhouse\n\n"
               "The city of Reykjavik opened a lunar greenhouse on Monday, growing potatoes under artificial "
               "moonlight in a converted fish factory. The mayor said the greenhouse would feed two hundred "
               "families through the winter.\n")


# -- helpers -----------------------------------------------------------------------------------------------

@pytest.fixture
def tg():
    with FakeTelegram() as fake:
        yield fake
    assert fake.unknown == [], f"the bot called Bot API methods the fake does not know: {fake.unknown}"


@pytest.fixture(autouse=True)
def token_never_logged(caplog):
    """Every test runs with INFO logging (one with DEBUG); the token must not show up in any record."""
    caplog.set_level(logging.INFO)
    yield
    assert TOKEN not in caplog.text


def bot_settings(home, tg: FakeTelegram, **overrides):
    return make_settings(home, telegram_bot_token=tg.token, telegram_api_base_url=tg.base_url, **overrides)


@contextlib.asynccontextmanager
async def running(settings, engine: Engine | None = None):
    """The application as run_polling runs it, in the test's event loop."""
    app = build_application(settings, engine or Engine(settings))
    await app.initialize()
    await app.post_init(app)
    await app.updater.start_polling(poll_interval=0, timeout=5, allowed_updates=telegram_bot.ALLOWED_UPDATES)
    await app.start()
    try:
        yield app
    finally:
        await app.updater.stop()
        await app.stop()
        await app.shutdown()
        await app.post_shutdown(app)


async def until(predicate, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := predicate():
            return result
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s")


async def replies(tg: FakeTelegram, chat_id: int, count: int, timeout: float = 30.0) -> list[dict]:
    return await until(lambda: len(m := tg.messages(chat_id)) >= count and m, timeout)


async def ask(tg: FakeTelegram, chat_id: int, text: str, **kwargs) -> dict:
    """Send a message and return the bot's next message in that chat."""
    before = len(tg.messages(chat_id))
    tg.message(chat_id, text, **kwargs)
    return (await replies(tg, chat_id, before + 1))[before]


def spy(engine: Engine) -> list[tuple[str, list]]:
    """Record every (question, history) the engine is asked."""
    calls, real = [], engine.ask

    async def ask_(question, history=(), k=None):
        calls.append((question, list(history)))
        return await real(question, history, k)

    engine.ask = ask_
    return calls


def plain(text: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", text))


def quotes(message: dict) -> list[str]:
    """The quotes of an answer: an offline answer's paragraphs «quote» [n], a written answer's folded ones."""
    text = message["text"]
    found = re.findall(r"^«(.+?)»(?: \[\d+\])+$", text, re.MULTILINE)
    found += re.findall(r"<blockquote expandable>\[\d+\] (.*?)</blockquote>", text, re.DOTALL)
    return [html.unescape(q) for q in found]


def buttons(message: dict) -> list[str]:
    return [b["callback_data"] for row in message["reply_markup"]["inline_keyboard"] for b in row]


def labels(message: dict) -> list[str]:
    return [b["text"] for row in message["reply_markup"]["inline_keyboard"] for b in row]


class TagChecker(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.ok = True

    def handle_starttag(self, tag, attrs) -> None:
        self.stack.append(tag)

    def handle_endtag(self, tag) -> None:
        self.ok = self.ok and bool(self.stack) and self.stack.pop() == tag


def balanced(text: str) -> bool:
    checker = TagChecker()
    checker.feed(text)
    checker.close()
    return checker.ok and not checker.stack


# -- rendering, without Telegram ---------------------------------------------------------------------------

def test_long_answer_is_split_between_blocks_with_balanced_tags():
    sentence = "Armenia said the shelling went on through the night near the line of contact <& \"quoted\">"
    sentences = [Sentence(f"{sentence} {i}", [i % 30 + 1]) for i in range(120)]
    text = " ".join(f"{s.text} [{s.citations[0]}]." for s in sentences)  # one ~12,000-character paragraph
    citations = [Citation(n, f"art{n}", f"Title {n} & more", "Outlet", "2020-09-28",
                          f"https://example.com/{n}?a=1&b=2", f"quote {n} " * (60 if n != 7 else 900),
                          0, 10) for n in range(1, 31)]  # quote 7 alone is longer than a message
    answer = Answer("q", text, sentences, citations, "llm", False, notice="The model <was> slow.")
    messages = answer_messages(answer)
    assert len(messages) > 4
    assert all(units(m) <= LIMIT and len(m) <= 4096 for m in messages)
    assert all(balanced(m) for m in messages), [m[-200:] for m in messages if not balanced(m)]
    assert messages[0].startswith("<i>The model &lt;was&gt; slow.</i>")
    joined = plain("".join(messages))
    assert all(f"{s.text} [{s.citations[0]}]." in joined.replace("\n", " ") for s in sentences)
    for c in citations:  # each source entry whole in one message, except the over-long one
        entry = f'[{c.n}] <a href="{html.escape(c.url)}">Title {c.n} &amp; more</a> — Outlet, 28 Sep 2020'
        holders = [m for m in messages if entry in m]
        assert len(holders) == 1
        if c.n != 7:
            assert f"<blockquote expandable>[{c.n}] {c.quote}</blockquote>" in holders[0]
    long_parts = [m for m in messages if "quote 7 " in m]
    assert len(long_parts) >= 2 and all(m.count("<blockquote expandable>") == m.count("</blockquote>")
                                        for m in long_parts)
    assert "".join(plain(m) for m in long_parts).count("quote 7") == 900


def test_split_html_reopens_tags_and_never_cuts_a_word_or_entity():
    block = "<b>" + "word&amp; " * 2000 + "</b>"
    pieces = split_html(block, 500)
    assert len(pieces) > 30
    for piece in pieces:
        assert len(piece) <= 500 and piece.startswith("<b>") and piece.endswith("</b>") and balanced(piece)
        assert re.fullmatch(r"<b>(word&amp; ?)+</b>", piece.replace(" </b>", "</b>"))


def test_safe_filename_and_rate_limiter():
    assert safe_filename("../../etc/passwd.txt") == "passwd.txt"
    assert safe_filename("..\\..\\Solar Farm!.MD") == "Solar_Farm.md"
    assert safe_filename("...") == "upload.txt"
    assert safe_filename(None) == "upload.txt"
    assert safe_filename("مقال جديد.html") == "مقال_جديد.html"
    limiter = RateLimiter(2)
    assert limiter.wait(1, now=0) == 0 and limiter.wait(1, now=10) == 0
    assert limiter.wait(1, now=20) == pytest.approx(40)
    assert limiter.wait(2, now=20) == 0
    assert limiter.wait(1, now=60.5) == 0


def test_missing_token_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="TELEGRAM_BOT_TOKEN"):
        run_bot(make_settings(tmp_path / "home"))


# -- the bot over HTTP -------------------------------------------------------------------------------------

async def test_question_answered_with_quotes_and_source_button(example_home, tg):
    async with running(bot_settings(example_home, tg)):
        question = tg.message(1, WEAPONS)
        reply = (await replies(tg, 1, 1))[0]
        assert reply["parse_mode"] == "HTML"
        assert reply["reply_parameters"]["message_id"] == question["message_id"]
        assert re.search(r"\[1\]", reply["text"]) and "<b>Sources</b>" in reply["text"]
        found = quotes(reply)
        assert found and all(q in ARTICLE for q in found)
        # one header for the one article, each quote once (no blockquote repeating it under Sources)
        header = re.findall(r"^(?:\[\d+\] )+.*— سبوتنيك, 28 Sep 2020$", reply["text"], re.MULTILINE)
        assert len(header) == 1 and "blockquote" not in reply["text"]
        assert all(plain(reply["text"]).count(q) == 1 for q in found)
        data = buttons(reply)
        assert data[0].startswith("src:") and data[0].endswith(":1")
        assert data[-2:] == [data[0].replace("src:", "v:").rsplit(":", 1)[0] + s for s in (":+", ":-")]
        assert labels(reply)[0] == "[1] سبوتنيك · 28 Sep" and labels(reply)[-2:] == ["👍", "👎"]
        assert all(len(d.encode()) <= 64 for d in data)
        # an English reader of Arabic quotes is told how to get a written answer in English
        assert "OPENAI_API_KEY" in reply["text"]

        tg.callback(1, data[0], reply["message"])
        passage = (await replies(tg, 1, 2))[1]
        text = plain(passage["text"])
        assert found[0] in text and len(text) > len(found[0])
        assert passage["reply_parameters"]["message_id"] == reply["message"]["message_id"]
        body = text.split("\n", 1)[1]
        assert body in ARTICLE
        await until(lambda: tg.calls_of("answerCallbackQuery"))
        tg.callback(1, data[0], reply["message"])  # tapped again: not sent twice
        again = await until(lambda: [c for c in tg.calls_of("answerCallbackQuery") if c.params.get("text")])
        assert "shown above" in again[0].params["text"] and len(tg.messages(1)) == 2

        tg.callback(1, "src:stale123:1", reply["message"])
        expired = await until(lambda: [c for c in tg.calls_of("answerCallbackQuery")
                                       if "expired" in c.params.get("text", "")])
        assert expired[0].params["show_alert"] in (True, "true", "True")
        assert tg.calls_of("setMyCommands")[0].params["commands"][0]["command"] == "start"


async def test_commands_and_odd_messages(example_home, tg):
    async with running(bot_settings(example_home, tg)) as app:
        help_ = (await ask(tg, 1, "/help"))["text"]
        assert "/ask" in help_ and "/reindex" not in help_  # not an admin
        assert "Articles indexed: 1" in (await ask(tg, 1, "/sources"))["text"]
        stats = plain((await ask(tg, 1, "/stats"))["text"])
        passages = app.bot_data["newsdesk"].index.stats()["chunks"]
        assert "Articles: 1" in stats and f"Passages: {passages}" in stats and passages > 1
        assert "don't know that command" in (await ask(tg, 1, "/frobnicate"))["text"]
        sticker = {"file_id": "s1", "file_unique_id": "us1", "type": "regular", "width": 512, "height": 512,
                   "is_animated": False, "is_video": False}
        for content in ({"sticker": sticker}, {"photo": [{"file_id": "p", "file_unique_id": "up", "width": 9,
                                                          "height": 9}]},
                        {"voice": {"file_id": "v", "file_unique_id": "uv", "duration": 2}}):
            before = len(tg.messages(1))
            tg.message(1, None, **content)
            assert "only read text" in (await replies(tg, 1, before + 1))[before]["text"]
        long = await ask(tg, 1, "why " * 1500)
        assert "too long" in long["text"] and len(long["text"]) < 200
        assert "Ask me a question" in (await ask(tg, 1, "   "))["text"]
        assert "Ask me a question" in (await ask(tg, 1, "/ask"))["text"]
        assert quotes(await ask(tg, 1, WEAPONS))  # still answering


async def test_group_rules(example_home, tg):
    settings = bot_settings(example_home, tg)
    engine = Engine(settings)
    asked = spy(engine)
    async with running(settings, engine):
        group = -100
        tg.message(group, "Who said what about the weapons?", user_id=5)
        tg.message(group, None, user_id=5, sticker={"file_id": "s", "file_unique_id": "u", "type": "regular",
                                                    "width": 1, "height": 1, "is_animated": False,
                                                    "is_video": False})
        mention = tg.message(group, WEAPONS, user_id=5, mention=True)
        first = (await replies(tg, group, 1))[0]
        assert first["reply_parameters"]["message_id"] == mention["message_id"] and quotes(first)
        assert [q for q, _ in asked] == [WEAPONS]

        reply_to_bot = tg.message(group, SPOKESPERSON, user_id=6, reply_to=first["message"])
        second = (await replies(tg, group, 2))[1]
        assert second["reply_parameters"]["message_id"] == reply_to_bot["message_id"] and quotes(second)
        third = await ask(tg, group, f"/ask {WEAPONS}", user_id=7)
        fourth = await ask(tg, group, f"/ask@{BOT_USERNAME} {SPOKESPERSON}", user_id=7)
        assert quotes(third) and quotes(fourth)
        await asyncio.sleep(0.3)
        assert len(tg.messages(group)) == 4
        assert [q for q, _ in asked] == [WEAPONS, SPOKESPERSON, WEAPONS, SPOKESPERSON]


async def test_follow_up_uses_the_chat_history_and_new_clears_it(example_home, tg):
    settings = bot_settings(example_home, tg)
    engine = Engine(settings)
    asked = spy(engine)
    async with running(settings, engine):
        first = await ask(tg, 2, SPOKESPERSON)
        follow_up = await ask(tg, 2, FOLLOW_UP)
        assert asked[1][0] == FOLLOW_UP and [t.question for t in asked[1][1]] == [SPOKESPERSON]
        assert asked[1][1][0].answer.startswith("Offline answer")
        assert quotes(follow_up) and follow_up["text"] != first["text"]
        assert all(q in ARTICLE for q in quotes(follow_up))

        alone = await ask(tg, 3, FOLLOW_UP)  # the same words without the history
        assert asked[2][1] == [] and alone["text"] != follow_up["text"]

        assert "new conversation" in (await ask(tg, 2, "/new"))["text"]
        again = await ask(tg, 2, FOLLOW_UP)
        assert asked[3][1] == [] and again["text"] == alone["text"]

        before = len(tg.messages(2))  # the answers before /new keep their source buttons
        tg.callback(2, buttons(first)[0], first["message"])
        passage = (await replies(tg, 2, before + 1))[before]
        assert quotes(first)[0] in plain(passage["text"])


async def test_admin_upload_is_indexed_and_others_are_refused(example_home, tg):
    settings = bot_settings(example_home, tg, telegram_admin_ids=frozenset({ADMIN}), upload_max_mb=0.05)
    engine = Engine(settings)
    async with running(settings, engine):
        tg.document(7, "lunar.txt", NEW_ARTICLE.encode())
        refused = (await replies(tg, 7, 1))[0]
        assert "only the bot's admins" in refused["text"]
        assert "only the bot's admins" in (await ask(tg, 7, "/reindex"))["text"]
        assert tg.calls_of("getFile") == [] and engine.index.stats()["articles"] == 1

        tg.document(ADMIN, "../../Lunar Greenhouse!.txt", NEW_ARTICLE.encode(), user_id=ADMIN)
        done = (await replies(tg, ADMIN, 1, timeout=60))[0]
        assert plain(done["text"]).startswith("Indexed 'Reykjavik opens a lunar greenhouse': 1 added, ")
        assert len(tg.calls_of("getFile")) == 1
        assert {r["id"] for r in engine.index.list_articles()} == {"karabakh-2020-09-28", "Lunar_Greenhouse"}

        answer = await ask(tg, ADMIN, "What does the greenhouse in Reykjavik grow?")
        assert any("Reykjavik" in q for q in quotes(answer)) and all(q in NEW_ARTICLE for q in quotes(answer))

        tg.document(ADMIN, "slides.pdf", b"%PDF-1.4", user_id=ADMIN)
        assert "I can index these files" in (await replies(tg, ADMIN, 3))[2]["text"]
        tg.document(ADMIN, "big.txt", b"x" * 60_000, user_id=ADMIN)
        assert "too big" in (await replies(tg, ADMIN, 4))[3]["text"]
        tg.document(ADMIN, "blank.md", b"  \n ", user_id=ADMIN)
        assert plain((await replies(tg, ADMIN, 5))[4]["text"]) == "Could not index 'blank.md': empty file"
        assert "No articles folder" in (await ask(tg, ADMIN, "/reindex"))["text"]
        assert len(tg.calls_of("getFile")) == 2 and engine.index.stats()["articles"] == 2


@contextlib.contextmanager
def web_page(html_text: str):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            body = html_text.encode("utf-8")
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/news/harbour-bridge.html"
    finally:
        server.shutdown()
        server.server_close()


PAGE = ("<!doctype html><html><head><title>Harbour bridge reopens</title></head><body><article>"
        "<h1>Harbour bridge reopens after repairs</h1>"
        "<p>The harbour bridge in Tromsø reopened on Friday after eight months of repairs to its steel "
        "cables. Engineers replaced forty cables and repainted the towers.</p>"
        "<p>The city council said traffic would be limited to cars and bicycles until the spring.</p>"
        "</article></body></html>")


async def test_add_url_and_reindex(example_home, tg, tmp_path):
    folder = tmp_path / "articles"
    folder.mkdir()
    (folder / "lunar.txt").write_text(NEW_ARTICLE, encoding="utf-8")
    settings = bot_settings(example_home, tg, telegram_admin_ids=frozenset({ADMIN}), allow_private_urls=True,
                            articles_dir=folder)
    engine = Engine(settings)
    with web_page(PAGE) as url:
        async with running(settings, engine):
            assert "only the bot's admins" in (await ask(tg, 7, f"/add {url}"))["text"]
            assert "Usage: /add" in (await ask(tg, ADMIN, "/add ftp://x"))["text"]
            unreachable = f"http://127.0.0.1:{free_port()}/gone"
            failed = plain((await ask(tg, ADMIN, f"/add {unreachable}"))["text"])
            assert failed == f"Could not index '{unreachable}': could not reach 127.0.0.1: connection refused"
            added = plain((await ask(tg, ADMIN, f"/add {url}"))["text"])
            assert added.startswith("Indexed '") and ": 1 added, " in added and "harbour" in added.lower()
            answer = await ask(tg, ADMIN, "How many cables did the engineers replace on the bridge?")
            assert any("forty cables" in q for q in quotes(answer))
            rescan = plain((await ask(tg, ADMIN, "/reindex"))["text"])
            assert rescan.startswith(f"Re-scanned {folder}: 1 added, 0 updated, 0 unchanged, 0 removed, "
                                     "0 failed")
            assert engine.index.stats()["articles"] == 3


async def test_rate_limit_and_allow_list(example_home, tg):
    settings = bot_settings(example_home, tg, rate_limit_per_minute=2,
                            telegram_allowed_chat_ids=frozenset({1, 5}))
    engine = Engine(settings)
    asked = spy(engine)
    async with running(settings, engine):
        for _ in range(3):
            tg.message(1, WEAPONS)
        sent = await replies(tg, 1, 3)
        slow = [m for m in sent if "Slow down" in m["text"]]
        assert len(slow) == 1 and re.search(r"try again in \d+ s", slow[0]["text"])
        assert sum(bool(quotes(m)) for m in sent) == 2

        assert "private" in (await ask(tg, 9, WEAPONS))["text"]
        assert quotes(await ask(tg, -300, WEAPONS, user_id=5, mention=True))  # an allowed user in any group
        tg.message(-400, WEAPONS, user_id=8)  # not addressed, not allowed: silence
        assert "private" in (await ask(tg, -400, WEAPONS, user_id=8, mention=True))["text"]
        assert len(tg.messages(-400)) == 1 and len(asked) == 3


@pytest.mark.filterwarnings("ignore:.*retry_after")
async def test_concurrent_chats_typing_and_flood_control(example_home, tg, monkeypatch):
    monkeypatch.setattr(telegram_bot, "TYPING_EVERY", 0.3)
    settings = bot_settings(example_home, tg)
    engine = Engine(settings)
    real = engine.ask

    async def slow_ask(question, history=(), k=None):
        if question.startswith("slow"):
            await asyncio.sleep(3)
        return await real(question, history, k)

    engine.ask = slow_ask
    async with running(settings, engine):
        await ask(tg, 3, WEAPONS)  # the models are loaded
        tg.message(1, f"slow {WEAPONS}")
        await until(lambda: tg.calls_of("sendChatAction", 1))
        tg.flood("sendMessage", retry_after=1)
        fast = await ask(tg, 2, WEAPONS)
        assert quotes(fast) and tg.messages(1) == []  # chat 2 was answered while chat 1 still waits
        to_chat_2 = [c.method for c in tg.calls
                     if c.method.startswith("sendMessage") and c.params["chat_id"] == "2"]
        assert to_chat_2 == ["sendMessage:flooded", "sendMessage"]  # flood control waited out, then sent
        await replies(tg, 1, 1)
        typing = tg.calls_of("sendChatAction", 1)
        assert len(typing) >= 4 and {c.params["action"] for c in typing} == {"typing"}


async def test_errors_get_a_fixed_apology(example_home, tg, caplog):
    settings = bot_settings(example_home, tg)
    engine = Engine(settings)

    async def broken(question, history=(), k=None):
        if "store" in question:
            raise StoreError("the article store cannot be reached")
        raise RuntimeError("internal detail /secret/path")

    engine.ask = broken
    async with running(settings, engine):
        oops = await ask(tg, 1, WEAPONS)
        assert oops["text"] == telegram_render.reply("tg.apology", "en") and "secret" not in oops["text"]
        store_down = (await ask(tg, 1, "is the store up?"))["text"]
        assert store_down == telegram_render.error_text(StoreError("")) and "cannot be reached" not in store_down
        engine.ask = Engine.ask.__get__(engine)
        assert quotes(await ask(tg, 1, WEAPONS))
    assert "RuntimeError: internal detail" in caplog.text  # the traceback is logged


async def test_token_is_redacted_from_debug_logs(example_home, tg, caplog):
    caplog.set_level(logging.DEBUG)
    async with running(bot_settings(example_home, tg)):
        await ask(tg, 1, WEAPONS)
    assert "Set Bot API URL" in caplog.text and "<token>" in caplog.text
    assert tg.token not in caplog.text and tg.token.split(":")[1] not in caplog.text


def _bot_env(home, tg: FakeTelegram) -> dict:
    """The environment of a `newsdesk bot` process: clean, a scratch home, the fake Bot API, DEBUG logging."""
    return clean_env(home, TELEGRAM_BOT_TOKEN=tg.token, TELEGRAM_API_BASE_URL=tg.base_url,
                     NEWSDESK_LOG_LEVEL="DEBUG")


def test_bot_command_answers_and_stops_cleanly_on_sigterm(example_home, tg):
    proc = subprocess.Popen([*NEWSDESK, "bot"], env=_bot_env(example_home, tg), cwd=example_home.parent,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        tg.wait(lambda: tg.calls_of("setMyCommands"), timeout=60)
        tg.message(1, WEAPONS)
        assert quotes(tg.wait_messages(1, 1, timeout=30)[0])
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
        elapsed = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-2000:]
    assert elapsed < 5, f"took {elapsed:.1f} s to stop"
    assert tg.token not in out + err and "Application is stopping" in err


def test_webhook_mode(example_home, tg):
    port = free_port()
    url = f"http://127.0.0.1:{port}/hook"
    proc = subprocess.Popen([*NEWSDESK, "bot", "--webhook-url", url, "--webhook-port", str(port),
                             "--webhook-secret", "s3cret"], env=_bot_env(example_home, tg),
                            cwd=example_home.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        hook = tg.wait(lambda: tg.calls_of("setWebhook"), timeout=60)[0].params
        assert hook["url"] == url and hook["secret_token"] == "s3cret"
        update = {"update_id": 1, "message": {"message_id": 1, "date": int(time.time()), "text": WEAPONS,
                                              "chat": tg.chat(1), "from": tg.user(1)}}
        post = functools.partial(httpx.post, url, json=update, timeout=10)
        tg.wait(lambda: _quietly(post, headers={"X-Telegram-Bot-Api-Secret-Token": "s3cret"}), timeout=30)
        assert quotes(tg.wait_messages(1, 1, timeout=30)[0])
        assert post(headers={"X-Telegram-Bot-Api-Secret-Token": "wrong"}).status_code == 403
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def _quietly(post, **kwargs) -> bool:
    try:
        return post(**kwargs).status_code == 200
    except httpx.HTTPError:
        return False


BENCH_ROUNDS = int(os.environ.get("NEWSDESK_BENCH_ROUNDS", "1"))  # more for a steadier measurement


def _percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


async def test_latency_printout(example_home, tg, capsys):
    """Not a timed assertion: prints p50/p95 from message to reply (offline mode), 1 chat and 10 at once.
    Every question is distinct, so the embedder's query cache does not flatter the numbers."""
    settings = bot_settings(example_home, tg, rate_limit_per_minute=0)
    bases = [WEAPONS, SPOKESPERSON, "What did the Azerbaijani ministry say about civilians?"]
    questions = (f"{bases[i % 3]} ({i})" for i in range(10_000))
    async with running(settings):
        await ask(tg, 99, WEAPONS)  # warm up
        single = []
        for i in range(BENCH_ROUNDS * 5):
            started = time.monotonic()
            tg.message(1, next(questions))
            await replies(tg, 1, i + 1)
            single.append(tg.calls_of("sendMessage", 1)[i].at - started)
        many = []
        for round_ in range(BENCH_ROUNDS):
            started = time.monotonic()
            for chat in range(10, 20):
                tg.message(chat, next(questions))
            for chat in range(10, 20):
                await replies(tg, chat, round_ + 1)
                many.append(tg.calls_of("sendMessage", chat)[round_].at - started)
    with capsys.disabled():
        print(f"\nlatency, 1 chat: p50 {statistics.median(single):.2f} s, "
              f"p95 {_percentile(single, 95):.2f} s; 10 chats at once: p50 {statistics.median(many):.2f} s, "
              f"p95 {_percentile(many, 95):.2f} s")
    assert len(single) == BENCH_ROUNDS * 5 and len(many) == BENCH_ROUNDS * 10



async def test_bot_fills_in_accurate_vectors_while_answering(tmp_path, tg):
    """Stage 2 in the running bot: an index built with `--fast` gets its accurate vectors in the background,
    and questions are answered meanwhile."""
    from tests.conftest import EXAMPLE_DIR, run_cli

    home = tmp_path / "home"
    run_cli("index", str(EXAMPLE_DIR), "--fast", home=home, check=True)
    settings = bot_settings(home, tg)
    engine = Engine(settings)
    stats = engine.index.stats()
    assert stats["accurate"]["passages"] == 0 and stats["accurate"]["pending"] == stats["chunks"] > 0
    async with running(settings, engine):
        first = await ask(tg, 100, "What weapons did each side allege?")
        assert "[1]" in plain(first["text"]) and quotes(first)
        await until(lambda: engine.index.store.count("accurate") == stats["chunks"], timeout=120)
        second = await ask(tg, 100, "Where did Stepanyan publish her statement?")
        assert quotes(second)
    assert engine.index.stats()["accurate"]["pending"] == 0


# -- small things (issue 14) -------------------------------------------------------------------------------

def count_calls(obj, name: str) -> list[int]:
    """Record how often ``obj.name`` is called (the real method still runs)."""
    calls, real = [], getattr(obj, name)

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    setattr(obj, name, counted)
    return calls


async def test_sources_and_stats_are_rate_limited_and_the_list_is_read_only_after_a_change(example_home, tg,
                                                                                           tmp_path):
    settings = bot_settings(example_home, tg, rate_limit_per_minute=3)
    engine = Engine(settings)
    reads = count_calls(engine.index, "list_articles")
    async with running(settings, engine):
        first = await ask(tg, 1, "/sources")
        assert "Articles indexed: 1" in first["text"]
        assert (await ask(tg, 1, "/sources"))["text"] == first["text"]
        assert len(reads) == 1  # the second /sources did not read the registry again
        assert "Articles: 1" in plain((await ask(tg, 1, "/stats"))["text"])
        for command in ("/sources", "/stats"):  # over the limit of 3 a minute, like a question
            assert re.search(r"Slow down .* try again in \d+ s", (await ask(tg, 1, command))["text"])
        assert re.search(r"Slow down", (await ask(tg, 1, WEAPONS))["text"])  # one budget for all three
        assert len(reads) == 1

        new = tmp_path / "reykjavik.txt"
        new.write_text(NEW_ARTICLE, encoding="utf-8")
        await asyncio.to_thread(engine.index.index, [str(new)], accurate=False)
        after = await ask(tg, 2, "/sources")  # another user: their own budget
        assert "Articles indexed: 2" in after["text"] and "Reykjavik opens a lunar greenhouse" in after["text"]
        assert len(reads) == 2  # the change was noticed (the store's generation token) and read once


async def test_error_replies_say_the_kind_of_problem_without_addresses(tmp_path, tg, caplog):
    with ChromaServer(tmp_path / "chroma-server", startup_timeout=30) as server:
        settings = bot_settings(tmp_path / "home", tg, chroma_host=server.host, chroma_port=server.port)
        async with running(settings):
            assert "No articles" in (await ask(tg, 1, "/sources"))["text"]
            await asyncio.to_thread(server.stop)  # the store server goes away under the running bot
            for command in ("/stats", "/sources"):
                reply = (await ask(tg, 1, command))["text"]
                assert "127.0.0.1" not in reply and str(server.port) not in reply and "chroma" not in reply.lower()
                assert reply == telegram_render.error_text(StoreError("")), reply
    assert f"is chroma server http://127.0.0.1:{server.port} reachable?" in caplog.text  # the log has it all


@pytest.mark.slow  # a bot process, and PTB's back-off between the failed polls: ~9 s
def test_polling_retries_log_one_line_each_not_a_traceback(example_home, tg):
    tg.fail("getUpdates", times=3)  # a proxy in front of Telegram answers 502 Bad Gateway three times
    env = {**_bot_env(example_home, tg), "NEWSDESK_LOG_LEVEL": "INFO"}
    proc = subprocess.Popen([*NEWSDESK, "bot"], env=env, cwd=example_home.parent,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        tg.wait(lambda: len(tg.calls_of("getUpdates:failed")) == 3, timeout=60)
        tg.message(1, WEAPONS)
        assert quotes(tg.wait_messages(1, 1, timeout=30)[0])  # polling resumed
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    failures = [line for line in err.splitlines() if "polling Telegram for updates failed" in line]
    assert len(failures) == 3, err[-3000:]
    assert all("WARNING" in line and "HTTP 502 from the proxy" in line for line in failures), failures
    assert "Traceback" not in err and "unexpected error" not in err, err[-3000:]


# -- issue 17: replies that read well, in the user's language; /start; menus; edits; votes ------------------

def _catalogue_files() -> dict[str, dict]:
    import json

    from newsdesk.bot.i18n import LOCALES

    def no_duplicates(pairs):
        keys = [k for k, _ in pairs]
        assert len(keys) == len(set(keys)), f"a key given twice: {sorted(k for k in keys if keys.count(k) > 1)}"
        return dict(pairs)

    return {p.stem: json.loads(p.read_text(encoding="utf-8"), object_pairs_hook=no_duplicates)
            for p in sorted(LOCALES.glob("*.json"))}


def test_message_catalogues_are_complete_and_valid_telegram_html():
    """Every language file: keys known to English, the same placeholders, valid Telegram HTML once filled; the
    six interface languages have every key, the others at least the answer notices."""
    from string import Formatter

    from newsdesk.bot.i18n import ANSWER_KEYS

    files = _catalogue_files()
    english = files["en"]
    assert {"en", "ar", "fr", "ru", "es", "de"} <= set(files)
    assert {"el", "hi", "ro", "th", "tr", "vi", "zh"} <= set(files)
    fields = {key: {f for _, f, _, _ in Formatter().parse(text) if f} for key, text in english.items()}
    for lang, texts in files.items():
        assert set(texts) <= set(english), (lang, set(texts) - set(english))
        wanted = set(english) if lang in {"ar", "fr", "ru", "es", "de"} else set(ANSWER_KEYS)
        assert wanted <= set(texts), (lang, sorted(wanted - set(texts)))
        for key, text in texts.items():
            assert {f for _, f, _, _ in Formatter().parse(text) if f} == fields[key], (lang, key)
            filled = text.format(**{f: "x" for f in fields[key]})
            assert balanced(filled) and not re.search(r"&(?!#?\w+;)|<(?!/?(b|i|code)>)", filled), (lang, key)
    assert len(set(files["de"]["date.months"].split())) == 12 == len(files["zh"]["date.months"].split())


def test_interface_and_answer_language():
    from newsdesk.bot.i18n import answer_language, interface_language
    from newsdesk.bot.engine import MESSAGES, language

    assert interface_language("fr-FR") == "fr" and interface_language("de", "Who is it?") == "de"
    assert interface_language(None, "Wer ist der Sprecher des Ministeriums?") == "de"
    assert interface_language("pt-br", "¿Quién es el portavoz del ministerio?") == "es"  # no Portuguese file
    assert interface_language("it", "hello") == "en" and interface_language(None, "") == "en"
    assert interface_language("el", "Ποιος είναι ο εκπρόσωπος;") == "en"  # Greek: answer notices only
    questions = {"ar": "من هو المتحدث باسم وزارة الدفاع؟", "de": "Wer ist der Sprecher des Verteidigungsministeriums?",
                 "el": "Ποιος είναι ο εκπρόσωπος του υπουργείου;", "es": "¿Quién es el portavoz del ministerio?",
                 "fr": "Qui est le porte-parole du ministère ?", "hi": "रक्षा मंत्रालय का प्रवक्ता कौन है?",
                 "ro": "Cine este purtătorul de cuvânt al ministerului?", "ru": "Кто пресс-секретарь министерства?",
                 "th": "ใครคือโฆษกของกระทรวงกลาโหม", "tr": "Bakanlığın sözcüsü kim?",
                 "vi": "Ai là người phát ngôn của bộ quốc phòng?", "zh": "国防部发言人是谁？", "en": "Who is it?"}
    for lang, question in questions.items():
        assert answer_language(question) == language(question) == lang, (lang, question)
        assert MESSAGES[lang]["abstain"] and (lang == "en" or MESSAGES[lang] != MESSAGES["en"])
    assert language("hello") == "en"  # a short Latin text the detector misreads (as Breton) stays English


def _offline_answer(n_sentences: int, n_articles: int) -> Answer:
    sentence = "Armenia said <the> shelling & \"fighting\" went on through the night near the line of contact"
    sentences = [Sentence(f"{sentence} {i}.", [i + 1]) for i in range(n_sentences)]
    citations = [Citation(i + 1, f"art{i % n_articles}", f"Title {i % n_articles} <&>", "Sputnik",
                          "2020-09-28", f"https://example.com/{i % n_articles}?a=1&b=2", s.text, 0, 10)
                 for i, s in enumerate(sentences)]
    intro = "Offline answer: quotes."
    text = intro + "\n" + "\n".join(f"[{s.citations[0]}] «{s.text}»" for s in sentences)
    return Answer("q", text, sentences, citations, "extractive", False)


@pytest.mark.parametrize("lang", ["en", "ar", "ru"])
def test_long_offline_answer_reads_well_and_stays_valid_html_after_every_split(lang):
    answer = _offline_answer(80, 5)
    messages = answer_messages(answer, lang)
    assert len(messages) >= 2
    assert all(units(m) <= LIMIT and balanced(m) for m in messages), [m[-200:] for m in messages if not balanced(m)]
    joined = "\n".join(plain(m) for m in messages)
    for s in answer.sentences:  # each quote once, as a plain paragraph (no blockquote for Translate to skip)
        assert joined.count(s.text) == 1 and f"«{s.text}» [{s.citations[0]}]" in joined
    assert "blockquote" not in "".join(messages)
    heads = re.findall(r"^(?:\[\d+\] )+Title (\d) <&>", joined, re.MULTILINE)
    assert sorted(heads) == ["0", "1", "2", "3", "4"]  # one header per article, not per citation
    assert re.search(r"^\[1\] \[6\] \[11\] .*Title 0", joined, re.MULTILINE)
    assert f"<b>{telegram_render.t('answer.sources', lang)}</b>" in "".join(messages)
    assert telegram_render.source_label(answer.citations[0], lang) in {
        "en": ["[1] Sputnik · 28 Sep"], "ar": ["[1] Sputnik · 28 سبتمبر"], "ru": ["[1] Sputnik · 28 сент."]}[lang]
    # an over-long quote (longer than a message) is split with its tags balanced too
    giant = Answer("q", "x\n[1] «" + "word & <b> " * 1200 + "»", [Sentence("word & <b> " * 1200, [1])],
                   answer.citations[:1], "extractive", False)
    parts = answer_messages(giant, lang)
    assert len(parts) >= 3 and all(units(m) <= LIMIT and balanced(m) for m in parts)


async def test_interface_follows_the_users_language(example_home, tg):
    """A German client gets German texts (headers, dates, buttons, the hint); a user without a language_code
    who asks in Russian gets Russian ones, and the engine's notice follows the question."""
    from newsdesk.bot.engine import MESSAGES

    tg.languages[5] = "de"
    async with running(bot_settings(example_home, tg)):
        start = await ask(tg, 5, "/start")
        assert start["text"].startswith("Hallo, user5!")
        examples = re.findall(r"^• <code>(.+)</code>$", start["text"], re.MULTILINE)
        assert len(examples) == 3 and len(set(examples)) == 3
        assert any(e.startswith("Was berichtet „") for e in examples)
        assert any("سبوتنيك" in html.unescape(e) and "28. Sep. 2020" in e for e in examples)
        reply = await ask(tg, 5, WEAPONS)
        assert "<b>Quellen</b>" in reply["text"] and "— سبوتنيك, 28. Sep. 2020" in reply["text"]
        assert labels(reply)[0] == "[1] سبوتنيك · 28. Sep." and "ausformulierte Antwort" in reply["text"]
        assert plain(reply["text"]).startswith(MESSAGES["en"]["extractive"])  # the question is English
        assert "Befehle" in (await ask(tg, 5, "/help"))["text"]
        assert "Neues Gespräch" in (await ask(tg, 5, "/new"))["text"]

        russian = await ask(tg, 6, "Какое оружие, по словам сторон, применялось в Карабахе?")
        assert plain(russian["text"]).startswith(MESSAGES["ru"]["extractive"])
        assert "<b>Источники</b>" in russian["text"] and labels(russian)[0] == "[1] سبوتنيك · 28 сент."
        assert "OPENAI_API_KEY" in russian["text"] and "на вашем языке" in russian["text"]


async def test_command_menus_are_scoped_to_admins_and_translated(example_home, tg):
    settings = bot_settings(example_home, tg, telegram_admin_ids=frozenset({ADMIN}))
    async with running(settings):
        users = ["start", "help", "ask", "new", "sources", "stats"]
        assert tg.commands("default")[:6] == users and "reindex" not in tg.commands("default")
        assert tg.commands("default", language_code="fr")[:6] == users
        admin = tg.commands("chat", chat_id=ADMIN)
        assert admin[:6] == users and {"add", "reindex"} <= set(admin)
        assert tg.commands("chat", chat_id=ADMIN, language_code="ru") == admin
        french = [c for c in tg.calls_of("setMyCommands") if c.params.get("language_code") == "fr"
                  and "scope" in c.params and c.params["scope"]["type"] == "default"][-1]
        assert french.params["commands"][3]["description"] == "commencer une nouvelle conversation"

        assert tg.commands("chat_member", chat_id=-100, user_id=ADMIN) is None
        await ask(tg, -100, WEAPONS, user_id=7, mention=True)  # a user in a group: nothing changes
        assert tg.commands("chat_member", chat_id=-100, user_id=7) is None
        await ask(tg, -100, WEAPONS, user_id=ADMIN, mention=True)  # an admin there: the group shows them theirs
        assert {"add", "reindex"} <= set(await until(lambda: tg.commands("chat_member", chat_id=-100, user_id=ADMIN)))
        assert "/reindex" in (await ask(tg, ADMIN, "/help"))["text"]


async def test_edited_question_is_answered_again_in_place(example_home, tg):
    settings = bot_settings(example_home, tg)
    engine = Engine(settings)
    asked = spy(engine)
    async with running(settings, engine):
        question = tg.message(1, WEAPONS)
        first = (await replies(tg, 1, 1))[0]
        tg.edit(question, SPOKESPERSON)
        edit = (await until(lambda: tg.edits(1)))[0]
        assert edit["message_id"] in (first["message"]["message_id"], str(first["message"]["message_id"]))
        shown = tg.shown(1)
        assert len(shown) == 1 and len(tg.messages(1)) == 1  # replaced, not a second reply
        assert shown[0]["text"] != first["message"]["text"] and quotes({"text": shown[0]["text"]})
        assert [q for q, _ in asked] == [WEAPONS, SPOKESPERSON]
        new_buttons = [b["callback_data"] for row in shown[0]["reply_markup"]["inline_keyboard"] for b in row]
        assert new_buttons[0] != buttons(first)[0]
        tg.callback(1, new_buttons[0], shown[0])  # the edited answer's buttons work
        passage = (await replies(tg, 1, 2))[1]
        assert quotes({"text": shown[0]["text"]})[0] in plain(passage["text"])

        group_question = tg.message(-100, "just chatting", user_id=5)  # not meant for the bot, nor its edit
        tg.edit(group_question, "still chatting")
        tg.edit(question, "/help")  # an edited command is not run again
        await asyncio.sleep(0.5)
        assert tg.messages(-100) == [] and len(asked) == 2 and len(tg.messages(1)) == 2


async def test_votes_are_recorded_with_the_answer(example_home, tg):
    import json

    tg.languages[3] = "es"
    settings = bot_settings(example_home, tg)
    async with running(settings):
        reply = await ask(tg, 3, WEAPONS)
        up, down = buttons(reply)[-2:]
        tg.callback(3, down, reply["message"])
        thanks = await until(lambda: [c for c in tg.calls_of("answerCallbackQuery") if c.params.get("text")])
        assert thanks[0].params["text"] == telegram_render.t("tg.vote_down", "es")
        tg.callback(3, "v:unknownkey:+", reply["message"])
        expired = await until(lambda: [c for c in tg.calls_of("answerCallbackQuery")
                                       if c.params.get("text") == telegram_render.t("tg.expired", "es")])
        assert expired
    lines = [json.loads(line) for line in settings.feedback_path.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == 1
    vote = lines[0]
    assert vote["vote"] == "down" and vote["question"] == WEAPONS and vote["mode"] == "extractive"
    assert vote["citations"] and all(c["quote"] in ARTICLE for c in vote["citations"]) and vote["retrieved"]
    assert str(vote["chat"]) == "3" and vote["answer_key"] == down.split(":")[1]


async def test_fake_bot_api_speaks_drafts_edits_reactions_and_scopes(tg):
    """The fake's newer methods, through the real PTB client: what B2's streaming and the bot rely on."""
    from telegram import Bot, BotCommand, BotCommandScopeChat, ReactionTypeEmoji
    from telegram.error import BadRequest

    async with Bot(tg.token, base_url=tg.base_url) as bot:
        sent = await bot.send_message(1, "first")
        assert await bot.send_message_draft(1, 77, "writing…")
        assert tg.drafts(1)[0]["text"] == "writing…" and str(tg.drafts(1)[0]["draft_id"]) == "77"
        edited = await bot.edit_message_text("second", 1, sent.message_id)
        assert edited.message_id == sent.message_id and [m["text"] for m in tg.shown(1)] == ["second"]
        with pytest.raises(BadRequest, match="not modified"):
            await bot.edit_message_text("second", 1, sent.message_id)
        assert await bot.set_message_reaction(1, sent.message_id, [ReactionTypeEmoji("👍")])
        assert await bot.set_my_commands([BotCommand("a", "b")], scope=BotCommandScopeChat(5), language_code="fr")
        assert tg.commands("chat", chat_id=5, language_code="fr") == ["a"] and tg.commands("default") is None
        assert await bot.delete_message(1, sent.message_id) and tg.shown(1) == []
        with pytest.raises(BadRequest):
            await bot.edit_message_text("third", 1, sent.message_id)
