"""Written answers streamed as they are written: the real openai client reading server-sent events from
tests/fake_openai.py (pieces with delays, servers that refuse or ignore streaming, streams that die), the engine's
``on_progress``, and the Telegram bot (the real python-telegram-bot client against tests/fake_telegram.py) showing
drafts in private chats and a throttled, edited progress message in groups, then only the verified answer."""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import os
import pty
import re
import select
import subprocess
import time
from dataclasses import replace

import pytest

from newsdesk.bot import llm, telegram_bot
from newsdesk.bot.engine import MESSAGES, Engine
from newsdesk.bot.llm import complete_cited_answer, readable
from newsdesk.index.errors import LLMResponseError, LLMUnavailableError
from newsdesk.index.openai_client import make_async_client
from tests.conftest import NEWSDESK, clean_env, copy_of_example, llm_settings, make_settings
from tests.fake_openai import FakeOpenAI, Reply, Stream, rate_limited
from tests.fake_telegram import FakeTelegram
from tests.test_llm import GOOD, HITS, Q_TOS
from tests.test_telegram import running as running_application

SPOKESPERSON_Q = "Who is the spokesperson of the Armenian Ministry of Defense?"
Q_SPOKESPERSON = "اعلنت المتحدث باسم وزارة الدفاع الارمينية، شوشان ستيبانيان"
FABRICATED = "أعلنت أذربيجان أنها أسقطت ثلاثين طائرة أرمينية"
TRUE_SENTENCE = "The spokesperson of Armenia's defence ministry is Shushan Stepanyan."
TOS_SENTENCE = "She said Azerbaijan used the heavy TOS flamethrower system in Karabakh."
FALSE_SENTENCE = "Azerbaijan said it shot down thirty Armenian aircraft."
# the model's reply: the middle sentence's quote is nowhere in the articles
REPLY = {"answerable": True, "sentences": [
    {"text": TRUE_SENTENCE, "citations": [{"source": 1, "quote": Q_SPOKESPERSON}]},
    {"text": FALSE_SENTENCE, "citations": [{"source": 1, "quote": FABRICATED}]},
    {"text": TOS_SENTENCE, "citations": [{"source": 1, "quote": Q_TOS}]},
]}
REPLY_CHARS = len(json.dumps(REPLY, ensure_ascii=False))


@pytest.fixture(autouse=True)
def fresh_caches():
    """What a server was found to support is remembered per process: every test starts without it."""
    llm.FORMAT_CACHE.clear()
    llm.STREAM_CACHE.clear()
    yield
    llm.FORMAT_CACHE.clear()
    llm.STREAM_CACHE.clear()


class Progress:
    """An ``on_progress`` that records (monotonic time, text) of every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, str]] = []

    async def __call__(self, text: str) -> None:
        self.calls.append((time.monotonic(), text))

    @property
    def texts(self) -> list[str]:
        return [text for _, text in self.calls]


async def _complete(fake: FakeOpenAI, progress: Progress | None, **overrides) -> dict:
    settings = llm_settings(fake.base_url, **overrides)
    client = make_async_client(settings)
    try:
        return await complete_cited_answer(client, settings, "What weapons did Azerbaijan use?", HITS,
                                           on_progress=progress)
    finally:
        await client.close()


# ---- what is shown of a reply being written ------------------------------------------------------

def test_readable_shows_the_sentence_texts_of_partial_json():
    full = json.dumps(GOOD, ensure_ascii=False)
    first, second = (s["text"] for s in GOOD["sentences"])
    assert readable(full) == f"{first} {second.replace(' [7]', '')}"  # the model's own markers never shown
    shown = [readable(full[:i]) for i in range(len(full) + 1)]
    assert all(b.startswith(a) for a, b in zip(shown, shown[1:]))  # it only grows: a terminal can print it
    assert not any("{" in s or "citations" in s or "توس" in s for s in shown)  # never JSON, never a quote
    assert readable('{"answerable": true, "sentences": [{"text": "Armenia said') == "Armenia said"
    assert readable('{"answerable": true, "sentences": [{"text": "a \\"TOS\\" b \\u06') == 'a "TOS" b'
    assert readable('{"sentences": [{"text": "حرب \\u0642\\u0631\\u0647 باغ"') == "حرب قره باغ"
    assert readable('{"sentences": [{"text": "line one\nline two [1') == "line one line two"
    assert readable('```json\n{"answerable": false, "sentences": [{"text": "x"') == ""


# ---- the LLM boundary ----------------------------------------------------------------------------

async def test_reply_is_streamed_as_readable_text_then_validated(fake):
    fake.script(Stream(GOOD, chunk_chars=8, delay=0.015))
    progress = Progress()
    raw = await _complete(fake, progress)

    assert raw == GOOD
    (request,) = fake.chat_requests
    assert request.body["stream"] is True and request.body["response_format"]["type"] == "json_schema"
    texts = progress.texts
    assert len(texts) >= 20 and texts[-1] == readable(json.dumps(GOOD, ensure_ascii=False))
    assert all(b.startswith(a) and a != b for a, b in zip(texts, texts[1:]))  # called only when it grew
    assert not any(Q_TOS[:20] in t or "{" in t for t in texts)
    pieces = [at for at, _ in fake.sent]
    assert progress.calls[0][0] < pieces[len(pieces) // 2]  # text early, not at the end


async def test_server_refusing_streaming_still_answers_and_is_remembered(fake):
    fake.streaming = "refuse"  # a 400 naming "stream"
    fake.script(Reply(GOOD), Reply(GOOD))
    progress = Progress()
    assert await _complete(fake, progress) == GOOD
    assert [r.body.get("stream") for r in fake.chat_requests] == [True, None]  # asked again at once, whole
    assert progress.calls == []
    assert await _complete(fake, progress) == GOOD
    assert [r.body.get("stream") for r in fake.chat_requests] == [True, None, None]  # straight there


async def test_server_ignoring_streaming_is_read_whole(fake):
    fake.streaming = "ignore"  # a whole chat.completion in answer to stream=true
    fake.script(Reply(GOOD))
    progress = Progress()
    assert await _complete(fake, progress) == GOOD
    assert progress.calls == [] and len(fake.chat_requests) == 1


async def test_opening_the_stream_is_retried_and_formats_step_down(fake, fast_backoff):
    fake.formats.refuse = {"json_schema"}
    fake.script(rate_limited(retry_after="0"), Stream(GOOD, delay=0.001))
    progress = Progress()
    assert await _complete(fake, progress) == GOOD
    kinds = [(r.body.get("stream"), r.body["response_format"]["type"]) for r in fake.chat_requests]
    assert kinds == [(True, "json_schema"), (True, "json_object"), (True, "json_object")]
    assert progress.texts[-1].startswith("Armenia's defence ministry said")


@pytest.mark.parametrize("stream, error, message", [
    (Stream(GOOD, die_after=10), LLMUnavailableError, "broke off"),  # the connection dropped mid-body
    (Stream(GOOD, error_after=10), LLMUnavailableError, "failed while writing"),  # llama.cpp's error event
    (Stream(GOOD, finish_reason="length"), LLMResponseError, "token limit"),
    (Stream(GOOD, chunk_chars=60, delay=3.0), LLMUnavailableError, r"broke off \(timed out\)"),  # it stalls
])
async def test_stream_that_breaks_off_is_not_retried(fake, stream, error, message):
    fake.default = Stream(GOOD)  # a retry would succeed
    fake.script(stream)
    progress = Progress()
    with pytest.raises(error, match=message):
        await _complete(fake, progress, llm_timeout=0.5)
    assert len(fake.chat_requests) == 1
    if stream.finish_reason == "stop":
        assert progress.calls  # text had been shown: the caller must replace it


# ---- the engine ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def home(example_index, tmp_path_factory):
    """The example index, shared by the module's tests; each test asks in chats of its own (conversations are
    kept under the home: a question in a chat used before would be a follow-up)."""
    return copy_of_example(example_index, tmp_path_factory, "streaming")


@pytest.fixture(scope="module")
def openai_server():
    """One fake OpenAI server for the module (the engine, with its encoders loaded once, talks to it)."""
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def llm_fake(openai_server):
    openai_server.requests.clear()
    openai_server.sent.clear()
    openai_server.streaming = "sse"
    yield openai_server
    with openai_server._lock:
        openai_server._script.clear()


@pytest.fixture(scope="module")
def engine(home, openai_server) -> Engine:
    return Engine(llm_settings(openai_server.base_url, home))


async def test_engine_streams_and_returns_only_verified_sentences(engine, llm_fake):
    llm_fake.script(Stream(REPLY, chunk_chars=10, delay=0.002))
    progress = Progress()
    answer = await engine.ask(SPOKESPERSON_Q, on_progress=progress)

    assert any(FALSE_SENTENCE in t for t in progress.texts)  # shown while written...
    assert answer.mode == "llm" and answer.dropped == [FALSE_SENTENCE]  # ...and not in the answer
    assert "thirty" not in answer.text and answer.text.startswith(TRUE_SENTENCE[:-1])
    assert TOS_SENTENCE[:-1] in answer.text and answer.citations


async def test_engine_falls_back_when_the_stream_dies(engine, llm_fake):
    llm_fake.script(Stream(REPLY, chunk_chars=10, die_after=12))
    progress = Progress()
    answer = await engine.ask(SPOKESPERSON_Q, on_progress=progress)
    assert progress.texts and progress.texts[-1] in TRUE_SENTENCE  # half a sentence had been shown
    assert answer.mode == "fallback" and answer.notice and answer.citations
    assert TRUE_SENTENCE[:20] not in answer.text


# ---- the Telegram bot ----------------------------------------------------------------------------

@pytest.fixture
def tg():
    with FakeTelegram() as fake:
        yield fake
    assert fake.unknown == [], f"the bot called Bot API methods the fake does not know: {fake.unknown}"


@contextlib.asynccontextmanager
async def running(engine: Engine, tg: FakeTelegram):
    """The bot (run_polling's steps, in the test's event loop) with ``engine``, against the fake Bot API."""
    settings = replace(engine.settings, telegram_bot_token=tg.token, telegram_api_base_url=tg.base_url)
    try:
        async with running_application(settings, engine) as app:
            yield app
    finally:
        await engine.aclose()


async def until(predicate, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := predicate():
            return result
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s")


def plain(text: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", text))


def progress_calls(tg: FakeTelegram, chat_id: int) -> list:
    """The bot's calls that showed the answer being written (drafts; in a group the first message and edits
    carrying the "writing" footer)."""
    return [c for c in list(tg.calls) if str(c.params.get("chat_id")) == str(chat_id)
            and c.method in ("sendMessageDraft", "sendMessage", "editMessageText")
            and "✍️" in c.params.get("text", "")]


async def test_private_chat_gets_drafts_then_only_the_verified_answer(engine, llm_fake, tg):
    llm_fake.script(Stream(REPLY, chunk_chars=12, delay=0.03))  # about 1.5 s of writing
    async with running(engine, tg):
        asked = time.monotonic()
        tg.message(11, SPOKESPERSON_Q)
        (final,) = await until(lambda: tg.messages(11))
        answered = next(c.at for c in tg.calls_of("sendMessage", 11))
    drafts = tg.calls_of("sendMessageDraft", 11)
    assert len(drafts) >= 2 and all(d.at < answered for d in drafts)
    assert len({str(d.params["draft_id"]) for d in drafts}) == 1  # one draft, animated as it changes
    assert any(FALSE_SENTENCE in plain(d.params["text"]) for d in drafts)  # shown while written
    for earlier, later in zip(drafts, drafts[1:]):
        assert later.at - earlier.at >= telegram_bot.DRAFT_EVERY * 0.95
    text = plain(final["text"])
    assert TRUE_SENTENCE[:-1] in text and TOS_SENTENCE[:-1] in text
    assert "thirty" not in text and "✍️" not in text  # nothing unverified, no progress footer
    assert tg.calls_of("editMessageText", 11) == []
    first_draft = drafts[0].at - asked
    print(f"\nprivate chat: first draft after {first_draft:.2f} s, final answer after {answered - asked:.2f} s, "
          f"{len(drafts)} drafts")


@pytest.mark.filterwarnings("ignore:.*retry_after")
async def test_group_gets_throttled_edits_then_the_answer_in_the_same_message(engine, llm_fake, tg, monkeypatch):
    monkeypatch.setattr(telegram_bot, "EDIT_EVERY", 0.4)
    llm_fake.script(Stream(REPLY, chunk_chars=6, delay=0.02))  # about 2 s of writing
    async with running(engine, tg):
        asked = time.monotonic()
        tg.message(-101, SPOKESPERSON_Q, mention=True)
        await until(lambda: len(progress_calls(tg, -101)) >= 2)
        tg.flood("editMessageText", retry_after=1)  # flood control: the next edit waits it out
        await until(lambda: any("✍️" not in c.params.get("text", "") for c in tg.calls_of("editMessageText", -101)))
    calls = progress_calls(tg, -101)
    assert calls[0].method == "sendMessage" and {c.method for c in calls[1:]} == {"editMessageText"}
    times = [c.at for c in calls]
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert min(gaps) >= 0.4 * 0.95  # never faster than the throttle
    flooded = next(c.at for c in tg.calls if c.method == "editMessageText:flooded")
    assert next(c.at for c in tg.calls_of("editMessageText", -101) if c.at > flooded) - flooded >= 1.0
    (shown,) = tg.shown(-101)  # one message: the progress message became the answer
    text = plain(shown["text"])
    assert shown["message_id"] == calls[0].params["message"]["message_id"]
    assert TRUE_SENTENCE[:-1] in text and "thirty" not in text and "✍️" not in text
    assert shown.get("reply_markup")  # the source buttons
    print(f"\ngroup: first text after {calls[0].at - asked:.2f} s, {len(calls) - 1} progress edits")


async def test_model_dying_mid_stream_leaves_only_the_offline_answer(engine, llm_fake, tg, monkeypatch):
    monkeypatch.setattr(telegram_bot, "EDIT_EVERY", 0.2)
    llm_fake.script(Stream(REPLY, chunk_chars=6, delay=0.03, die_after=25),
                    Stream(REPLY, chunk_chars=6, delay=0.03, die_after=25))
    async with running(engine, tg):
        tg.message(-102, SPOKESPERSON_Q, mention=True)
        tg.message(12, SPOKESPERSON_Q)
        await until(lambda: tg.messages(12) and any(
            "✍️" not in c.params.get("text", "") for c in tg.calls_of("editMessageText", -102)))
    assert progress_calls(tg, -102) and tg.drafts(12)  # partial text was shown in both chats
    for chat in (-102, 12):
        (shown,) = tg.shown(chat)
        text = plain(shown["text"])
        assert "✍️" not in text and TRUE_SENTENCE[:20] not in text  # none of the half-written answer
        assert plain(MESSAGES["en"]["fallback"]) in text  # the offline answer, with its notice


async def test_offline_answers_are_single_messages_without_drafts(home, tg):
    async with running(Engine(make_settings(home)), tg):
        tg.message(13, SPOKESPERSON_Q)
        tg.message(-103, SPOKESPERSON_Q, mention=True)
        await until(lambda: tg.messages(13) and tg.messages(-103))
    assert tg.drafts() == [] and tg.edits() == []
    assert len(tg.shown(13)) == 1 and len(tg.shown(-103)) == 1


async def test_a_refused_draft_stops_the_drafts_and_a_failed_one_does_not(engine, llm_fake, tg):
    llm_fake.script(Stream(REPLY, chunk_chars=12, delay=0.015), Stream(REPLY, chunk_chars=12, delay=0.015))
    async with running(engine, tg):
        tg.fail("sendMessageDraft", times=1, status=400)  # e.g. a Bot API server without drafts
        tg.message(14, SPOKESPERSON_Q)
        (refused,) = await until(lambda: tg.messages(14))
        tg.fail("sendMessageDraft", times=1, status=502)  # a proxy's hiccup
        tg.message(15, SPOKESPERSON_Q)
        (failed,) = await until(lambda: tg.messages(15))
    assert [c.method for c in tg.calls if c.method.startswith("sendMessageDraft") and c.params["chat_id"] == "14"] \
        == ["sendMessageDraft:failed"]  # not tried again for that answer
    assert tg.drafts(15)  # tried again after the hiccup
    for final in (refused, failed):  # the answer comes either way
        assert TRUE_SENTENCE[:-1] in plain(final["text"]) and "thirty" not in final["text"]


# ---- the terminal --------------------------------------------------------------------------------

def _read_all(fd: int, proc, timeout: float = 60) -> str:
    """Everything the process writes to its terminal until it exits."""
    seen, deadline = b"", time.monotonic() + timeout
    while time.monotonic() < deadline:
        if select.select([fd], [], [], 0.1)[0]:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # the other side closed
                break
            if not chunk:
                break
            seen += chunk
        elif proc.poll() is not None:
            break
    return seen.decode(errors="replace")


@pytest.mark.slow
def test_ask_at_a_terminal_shows_the_answer_being_written_then_only_the_verified_one(home, fake):
    """`newsdesk ask` in LLM mode at a terminal: one line on standard error follows the model's writing, and is
    erased before the verified answer is printed; piped, only the answer."""
    fake.script(Stream(REPLY, chunk_chars=8, delay=0.02), Stream(REPLY))
    env = {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": fake.base_url, "NEWSDESK_LLM_MODEL": "fake-model",
           "COLUMNS": "200"}
    master, slave = pty.openpty()
    proc = subprocess.Popen([*NEWSDESK, "ask", SPOKESPERSON_Q], stdin=subprocess.DEVNULL, stdout=slave,
                            stderr=slave, env=clean_env(home, **env), cwd=home.parent, start_new_session=True)
    os.close(slave)
    try:
        out = _read_all(master, proc)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    ticks = re.findall(r"\r\x1b\[K… ([^\r]*)", out)
    assert len(ticks) >= 5 and any("thirty" in tick for tick in ticks)  # the sentences as they were written
    shown = out[out.rindex("\r\x1b[K") + len("\r\x1b[K"):]  # what the terminal shows after the last erase
    assert TRUE_SENTENCE[:-1] in shown and "thirty" not in shown and "… She said" not in shown
    piped = subprocess.run([*NEWSDESK, "ask", SPOKESPERSON_Q], capture_output=True, text=True,
                           env=clean_env(home, **env), cwd=home.parent, timeout=60)
    assert piped.returncode == 0 and "\x1b" not in piped.stdout + piped.stderr
    assert TRUE_SENTENCE[:-1] in piped.stdout
