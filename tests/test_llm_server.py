"""LLM mode against what real OpenAI-compatible servers do, through the real client over HTTP to
tests/fake_openai.py: response_format refused (llama-cpp-python's 500, strict 400/422) or ignored, answers cut at
max_tokens, connect and total timeouts, and bodies that are not a readable completion at all."""

from __future__ import annotations

import json
import socket
import time

import pytest

from newsdesk.bot import llm
from newsdesk.bot.llm import CITED_ANSWER_SCHEMA, complete_cited_answer, parse_cited_answer, standalone_question
from newsdesk.bot.answers import Turn
from newsdesk.index.errors import LLMResponseError, LLMUnavailableError
from newsdesk.index.openai_client import make_async_client
from newsdesk.index.settings import Settings
from tests.conftest import llm_settings, run_cli
from tests.fake_openai import (
    BAD_REQUEST_REFUSAL,
    LLAMA_CPP_PYTHON_REFUSAL,
    UNPROCESSABLE_REFUSAL,
    Formats,
    Raw,
    Reply,
    Sleep,
    Status,
    completion_body,
)
from tests.test_llm import GOOD, HITS

UNANSWERABLE = {"answerable": False, "sentences": []}
PROSE = "Sure! Azerbaijan used the TOS system [1]."
FENCED = f"Here is the answer you asked for:\n\n```json\n{json.dumps(GOOD, ensure_ascii=False)}\n```\nHope it helps!"


@pytest.fixture(autouse=True)
def forget_formats():
    """Each test meets its servers for the first time (a later fake may get an earlier one's port)."""
    llm.FORMAT_CACHE.clear()
    yield
    llm.FORMAT_CACHE.clear()


async def _ask(settings: Settings, question: str = "What weapons did Azerbaijan use?") -> dict:
    client = make_async_client(settings)
    try:
        return await complete_cited_answer(client, settings, question, HITS)
    finally:
        await client.close()


def _formats(fake) -> list:
    return [(r.body.get("response_format") or {}).get("type") for r in fake.chat_requests]


# ---- structured output that degrades gracefully --------------------------------------------------

@pytest.mark.parametrize("refusal", [LLAMA_CPP_PYTHON_REFUSAL, BAD_REQUEST_REFUSAL, UNPROCESSABLE_REFUSAL],
                         ids=["llama-cpp-python-500", "400", "422"])
async def test_refused_json_schema_steps_down_to_json_object_at_once(fake, refusal):
    fake.formats = Formats(refuse={"json_schema"}, refusal=refusal)
    fake.script(Reply(GOOD), Reply(UNANSWERABLE))
    settings = llm_settings(fake.base_url)
    started = time.monotonic()
    assert await _ask(settings) == parse_cited_answer(json.dumps(GOOD))
    assert time.monotonic() - started < 1.0  # no backoff: a refusal is not transient
    assert _formats(fake) == ["json_schema", "json_object"]
    assert fake.chat_requests[1].body["response_format"] == {"type": "json_object", "schema": CITED_ANSWER_SCHEMA}

    assert await _ask(settings) == UNANSWERABLE  # the next question goes straight to what worked
    assert _formats(fake) == ["json_schema", "json_object", "json_object"]


async def test_server_refusing_both_formats_is_prompted_plainly(fake):
    fake.formats = Formats(refuse={"json_schema", "json_object"}, refusal=BAD_REQUEST_REFUSAL)
    fake.script(Reply(FENCED), Reply(UNANSWERABLE))
    settings = llm_settings(fake.base_url)
    assert (await _ask(settings))["sentences"][1]["citations"][0]["source"] == 2
    assert _formats(fake) == ["json_schema", "json_object", None]
    assert "response_format" not in fake.chat_requests[2].body
    assert "Reply with JSON only" in fake.chat_requests[2].content("system")  # the prompt still asks for it

    await _ask(settings)
    assert _formats(fake) == ["json_schema", "json_object", None, None]


async def test_what_worked_is_remembered_per_model(fake):
    fake.formats = Formats(refuse={"json_schema"}, refusal=BAD_REQUEST_REFUSAL)
    fake.default = Reply(UNANSWERABLE)
    await _ask(llm_settings(fake.base_url))
    await _ask(llm_settings(fake.base_url, llm_model="another-model"))
    assert _formats(fake) == ["json_schema", "json_object", "json_schema", "json_object"]


async def test_reply_in_prose_around_fenced_json_is_read(fake):
    fake.script(Reply(FENCED))  # a server that ignores response_format
    raw = await _ask(llm_settings(fake.base_url))
    assert raw == parse_cited_answer(json.dumps(GOOD))
    assert len(fake.chat_requests) == 1


@pytest.mark.parametrize("content", [
    "```json\n{\"answerable\": false, \"sentences\": []}\n```",
    "```\n{\"answerable\": false, \"sentences\": []}```",
    "Answer: {\"answerable\": false, \"sentences\": []} -- done.",
    "<think>The sources say {nothing} about it.</think>\n{\"answerable\": false, \"sentences\": []}",
])
def test_tolerant_parsing(content):
    assert parse_cited_answer(content) == UNANSWERABLE


async def test_prose_reply_is_asked_again_with_the_next_format(fake):
    fake.script(Reply(PROSE), Reply(GOOD))  # json_schema accepted but ignored; json_object honoured
    raw = await _ask(llm_settings(fake.base_url))
    assert raw["answerable"] is True
    assert _formats(fake) == ["json_schema", "json_object"]


async def test_prose_under_every_format_is_a_response_error(fake):
    fake.default = Reply(PROSE)
    with pytest.raises(LLMResponseError, match="did not reply with JSON"):
        await _ask(llm_settings(fake.base_url))
    assert _formats(fake) == ["json_schema", "json_object", None]


@pytest.mark.parametrize("content", ['{"answerable": true, "sentences": [', '```json\n{"answerable": true, "sent'])
async def test_broken_json_is_not_asked_again(fake, content):
    fake.default = Reply(content)  # the server did honour the format: another format would not help
    with pytest.raises(LLMResponseError):
        await _ask(llm_settings(fake.base_url))
    assert len(fake.chat_requests) == 1


async def test_server_error_not_about_the_format_is_still_retried(fake, fast_backoff):
    fake.script(Status(500, message="CUDA out of memory"), Reply(GOOD))
    await _ask(llm_settings(fake.base_url))
    assert _formats(fake) == ["json_schema", "json_schema"]


async def test_other_bad_requests_are_still_refusals(fake):
    fake.default = Status(400, message="This model's maximum context length is 4096 tokens")
    with pytest.raises(LLMUnavailableError, match=r"refused the request \(HTTP 400\)"):
        await _ask(llm_settings(fake.base_url))
    assert len(fake.chat_requests) == 1


# ---- bounded generation --------------------------------------------------------------------------

async def test_max_tokens_is_sent(fake):
    fake.script(Reply(UNANSWERABLE), Reply("What did Azerbaijan say?"))
    settings = llm_settings(fake.base_url, llm_max_tokens=700)
    await _ask(settings)
    client = make_async_client(settings)
    try:
        await standalone_question(client, settings, "and Azerbaijan?", [Turn("What did Armenia say?", "… [1].")])
    finally:
        await client.close()
    assert [r.body["max_tokens"] for r in fake.chat_requests] == [700, llm.STANDALONE_MAX_TOKENS]


async def test_reply_cut_at_max_tokens_is_a_failed_reply(fake):
    fake.script(Reply(UNANSWERABLE, finish_reason="length"))  # even whole-looking JSON is not trusted
    with pytest.raises(LLMResponseError, match="token limit"):
        await _ask(llm_settings(fake.base_url))
    assert len(fake.chat_requests) == 1


def test_timeout_settings():
    defaults = Settings.load(environ={}, env_file=None)
    assert (defaults.llm_connect_timeout, defaults.llm_timeout, defaults.llm_max_seconds,
            defaults.llm_max_tokens) == (5.0, 150.0, 180.0, 1024)
    custom = Settings.load(environ={"NEWSDESK_LLM_CONNECT_TIMEOUT": "2", "NEWSDESK_LLM_TIMEOUT": "300",
                                    "NEWSDESK_LLM_MAX_SECONDS": "400", "NEWSDESK_LLM_MAX_TOKENS": "512"},
                           env_file=None)
    assert (custom.llm_connect_timeout, custom.llm_timeout, custom.llm_max_seconds,
            custom.llm_max_tokens) == (2.0, 300.0, 400.0, 512)


async def test_connect_timeout_is_separate_from_the_read_timeout():
    with socket.socket() as listener:  # accepts nothing: once its backlog is full, connecting hangs
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = []
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        try:
            settings = llm_settings(f"http://127.0.0.1:{port}/v1", llm_connect_timeout=0.3, llm_timeout=30.0,
                                    llm_max_attempts=1)
            started = time.monotonic()
            with pytest.raises(LLMUnavailableError, match="timed out"):
                await _ask(settings)
            assert time.monotonic() - started < 3.0
        finally:
            for filler in fillers:
                filler.close()


async def test_total_time_covers_every_format(fake):
    fake.formats = Formats(refuse={"json_schema"}, refusal=LLAMA_CPP_PYTHON_REFUSAL)
    fake.default = Sleep(0.6, Reply(PROSE))  # refused at once, then 0.6 s of prose, then 0.6 s more: too long
    started = time.monotonic()
    with pytest.raises(LLMUnavailableError, match="within 1 s"):
        await _ask(llm_settings(fake.base_url, llm_max_seconds=1.0))
    assert time.monotonic() - started < 1.15
    assert _formats(fake) == ["json_schema", "json_object", None]


# ---- malformed replies never crash ---------------------------------------------------------------

DEEP = "[" * 100_000 + "]" * 100_000
BAD_BODIES = {
    "truncated body": Raw(completion_body({"role": "assistant", "content": json.dumps(GOOD)})[:150]),
    "deeply nested body": Raw(DEEP.encode()),
    "deeply nested content": Raw(completion_body({"role": "assistant", "content": DEEP})),
    "deeply nested object in prose": Raw(completion_body({"role": "assistant", "content": "x " + "{\"a\":" * 50_000})),
    "not UTF-8": Raw(b'{"choices": [{"message": {"content": "\xff\xfe\xc3("}}]}'),
    "garbage": Raw(b"\x00\x9f\x92\x96 garbage <html>", content_type="text/html"),
    "empty body": Raw(b""),
    "empty choices": Raw(completion_body(None, choices=[])),
    "choices not a list": Raw(b'{"choices": "none"}'),
    "choice not an object": Raw(completion_body(None, choices=["x"])),
    "message not an object": Raw(completion_body("hello")),
    "content null": Raw(completion_body({"role": "assistant", "content": None})),
    "content a number": Raw(completion_body({"role": "assistant", "content": 42})),
    "a list": Raw(b"[1, 2, 3]"),
}


@pytest.mark.parametrize("behaviour", BAD_BODIES.values(), ids=BAD_BODIES.keys())
async def test_malformed_replies_are_response_errors(fake, behaviour):
    fake.default = behaviour
    with pytest.raises(LLMResponseError):
        await _ask(llm_settings(fake.base_url))
    assert len(fake.chat_requests) in (1, 3)  # 3: a body read as prose, asked the next two ways


@pytest.mark.parametrize("name", ["truncated body", "deeply nested content", "content null"])
def test_ask_falls_back_to_the_offline_answer_on_malformed_replies(fake, example_home, name):
    fake.default = BAD_BODIES[name]
    env = {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": fake.base_url, "NEWSDESK_LLM_MODEL": "fake-model"}
    proc = run_cli("ask", "Who is the spokesperson of the Armenian Ministry of Defense?", home=example_home, env=env)
    assert proc.returncode == 0, proc.stderr
    first, blank, rest = proc.stdout.split("\n", 2)
    assert first.startswith("(The language model could not answer") and blank == ""
    assert rest.startswith("Offline answer:")
    assert "Traceback" not in proc.stderr and "Error" not in proc.stdout + proc.stderr
