"""Calls to the language model: a cited answer as JSON, and follow-up questions made standalone.

Everything the model is told lives in ``prompts/*.txt``. Transient failures (429, 5xx, timeouts, connection
errors) are retried with exponential backoff and jitter, honouring ``Retry-After``, bounded by
``settings.llm_max_attempts`` attempts and ``settings.llm_max_seconds`` in total; then, or at once for a
refused request (400/401/403/404…), :class:`LLMUnavailableError` is raised. Every request carries
``max_tokens`` (``settings.llm_max_tokens``); a reply cut by it is a failed reply.

Structured output degrades gracefully, because servers differ: the cited answer is asked for with
``response_format`` ``json_schema`` (OpenAI, vLLM, recent llama.cpp and Ollama), then ``json_object`` with the
schema (llama-cpp-python's server), then with no ``response_format`` at all (the prompt asks for the JSON). A
server that refuses a format (HTTP 400/422/500 naming it) is asked the next way at once, without retries; a
reply in prose (the format ignored) is asked again the next way. What worked is remembered per server and model
for the life of the process (:data:`FORMAT_CACHE`, not persisted), so later questions go straight there.

Streaming (``on_progress``, for front ends that show the answer as it is written): the same request with
``stream=True``, read as server-sent events by us (not the SDK), and the readable part of the reply so far (the
sentence texts of the partial JSON: :func:`readable`) is passed to ``on_progress`` whenever it grows. Opening the
stream is retried like any request; a stream that breaks off once it has started is not (a local model would
write the whole answer again: the offline answer comes sooner). A server that refuses ``stream`` (400/422/500
naming it) is asked again at once without it, and remembered (:data:`STREAM_CACHE`); one that ignores it and sends a
whole completion is read as one.

Replies are read tolerantly (a code fence, text around one JSON object) but validated strictly; a reply that is
not valid ``cited_answer`` JSON, or not a readable completion at all (a truncated or garbled body, nesting too
deep to parse, no choices, no content), raises :class:`LLMResponseError`. Quotes are checked later, by
``bot.verify``.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import html
import json
import logging
import math
import random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from functools import cache
from importlib.resources import files
from itertools import islice
from string import Template

import httpx
import openai
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
)

from newsdesk.index.errors import LLMResponseError, LLMUnavailableError
from newsdesk.index.settings import Settings
from newsdesk.index.types import Hit

from .answers import Turn

log = logging.getLogger(__name__)

# Backoff between attempts: BACKOFF_BASE * 2**(attempt-1) capped at BACKOFF_MAX, with "equal jitter" (the wait
# is between half and all of it). A server's Retry-After is honoured up to RETRY_AFTER_MAX seconds.
BACKOFF_BASE = 0.5
BACKOFF_MAX = 8.0
RETRY_AFTER_MAX = 30.0
HISTORY_ANSWER_CHARS = 600  # each earlier answer is cut to this many characters in the prompts
STANDALONE_MAX_TOKENS = 256  # a rewritten follow-up is one line: never let it run to llm_max_tokens
MAX_JSON_STARTS = 50  # tolerant parsing tries a JSON object at this many "{" of a reply, at most

try:  # the HTTP library the SDK reads streams with: httpx2 in recent openai releases, httpx before
    import httpx2

    HTTP_ERRORS: tuple[type[Exception], ...] = (httpx.HTTPError, httpx2.HTTPError)
    HTTP_TIMEOUTS: tuple[type[Exception], ...] = (httpx.TimeoutException, httpx2.TimeoutException)
except ImportError:  # pragma: no cover - depends on the installed openai
    HTTP_ERRORS, HTTP_TIMEOUTS = (httpx.HTTPError,), (httpx.TimeoutException,)

RETRYABLE = (openai.RateLimitError, openai.InternalServerError, openai.APIConnectionError)  # incl. timeouts

_CITATION = {
    "type": "object",
    "properties": {"source": {"type": "integer"}, "quote": {"type": "string"}},
    "required": ["source", "quote"],
    "additionalProperties": False,
}
_SENTENCE = {
    "type": "object",
    "properties": {"text": {"type": "string"}, "citations": {"type": "array", "items": _CITATION}},
    "required": ["text", "citations"],
    "additionalProperties": False,
}
CITED_ANSWER_SCHEMA = {
    "type": "object",
    "properties": {"answerable": {"type": "boolean"}, "sentences": {"type": "array", "items": _SENTENCE}},
    "required": ["answerable", "sentences"],
    "additionalProperties": False,
}
RESPONSE_FORMAT = {
    "type": "json_schema",
    "json_schema": {"name": "cited_answer", "strict": True, "schema": CITED_ANSWER_SCHEMA},
}
# The ways of asking for the cited answer, best first; None: no response_format, the prompt asks for JSON.
FORMATS: tuple[tuple[str, dict | None], ...] = (
    ("json_schema", RESPONSE_FORMAT),
    ("json_object", {"type": "json_object", "schema": CITED_ANSWER_SCHEMA}),
    ("prompt", None),
)
# (base URL, model) -> index in FORMATS of the way that worked (or the best one not refused): in-process only.
FORMAT_CACHE: dict[tuple[str, str], int] = {}
_FORMAT_WORDS = ("response_format", "json_schema", "json_object")
# (base URL, model) -> False once the server refused ``stream``: in-process only, like FORMAT_CACHE.
STREAM_CACHE: dict[tuple[str, str], bool] = {}
_STREAM_WORD = re.compile(r"\bstream(?:ing)?\b", re.IGNORECASE)

Progress = Callable[[str], Awaitable[None]]  # awaited with the readable text of the reply so far


@cache
def prompt(name: str) -> str:
    """The text of ``prompts/<name>.txt``."""
    return files("newsdesk.prompts").joinpath(f"{name}.txt").read_text(encoding="utf-8")


# ---- prompts -------------------------------------------------------------------------------------

def _attr(value: str | None) -> str:
    return html.escape(" ".join((value or "").split()), quote=True)


_SOURCE_TAG = re.compile(r"<(\s*/?\s*source)", re.IGNORECASE)


def _neutralise(text: str) -> str:
    """Keep a passage from closing its own block or opening a new one (``</source>``, ``</SOURCE >``,
    ``< source n="9">``: any case and spacing)."""
    return _SOURCE_TAG.sub(r"&lt;\1", text)


def format_sources(hits: Sequence[Hit]) -> str:
    blocks = []
    for n, hit in enumerate(hits, 1):
        head = (f'<source n="{n}" title="{_attr(hit.title)}" outlet="{_attr(hit.source)}" '
                f'date="{_attr(hit.published)}">')
        blocks.append(f"{head}\n{_neutralise(hit.text)}\n</source>")
    return "\n\n".join(blocks)


def format_history(history: Sequence[Turn]) -> str:
    lines = []
    for turn in history:
        lines.append(f"User: {' '.join(turn.question.split())}")
        if turn.answer:
            answer = " ".join(turn.answer.split())
            if len(answer) > HISTORY_ANSWER_CHARS:
                answer = answer[:HISTORY_ANSWER_CHARS] + "…"
            lines.append(f"Assistant: {answer}")
    return "\n".join(lines)


def cited_answer_messages(question: str, hits: Sequence[Hit], history: Sequence[Turn] = ()) -> list[dict]:
    earlier = format_history(history)
    earlier = f"Earlier in this conversation (context only):\n{earlier}\n" if earlier else ""
    user = Template(prompt("cited_answer_user")).safe_substitute(
        history=earlier, sources=format_sources(hits), question=question.strip())
    return [{"role": "system", "content": prompt("cited_answer_system")},
            {"role": "user", "content": user.lstrip()}]


def standalone_messages(question: str, history: Sequence[Turn]) -> list[dict]:
    user = Template(prompt("standalone_user")).safe_substitute(
        history=format_history(history), question=question.strip())
    return [{"role": "system", "content": prompt("standalone_system")}, {"role": "user", "content": user}]


# ---- retries -------------------------------------------------------------------------------------

def backoff(attempt: int) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based), jittered."""
    delay = min(BACKOFF_MAX, BACKOFF_BASE * 2 ** (attempt - 1))
    return delay / 2 + random.uniform(0, delay / 2)


def retry_after(exc: BaseException | None) -> float | None:
    """The ``Retry-After`` of a 429/503 response, in seconds (a number or an HTTP date), else None."""
    if not isinstance(exc, openai.APIStatusError) or exc.status_code not in (429, 503):
        return None
    value = exc.response.headers.get("retry-after")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    return max(0.0, seconds) if math.isfinite(seconds) else None


def _wait(state: RetryCallState) -> float:
    exc = state.outcome.exception() if state.outcome else None
    return max(backoff(state.attempt_number), min(retry_after(exc) or 0.0, RETRY_AFTER_MAX))


def _reason(exc: BaseException) -> str:
    """One line about a failure, without response bodies (an echoed API key could be in them)."""
    if isinstance(exc, (openai.APITimeoutError, *HTTP_TIMEOUTS)):
        return "timed out"
    if isinstance(exc, openai.APIConnectionError):
        return "cannot connect"
    if isinstance(exc, openai.RateLimitError):
        return "rate limited (HTTP 429)"
    if isinstance(exc, openai.APIStatusError):
        return f"server error (HTTP {exc.status_code})"
    return type(exc).__name__


def _log_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    wait = state.next_action.sleep if state.next_action else 0.0
    log.warning("language model attempt %d failed (%s); retrying in %.1f s",
                state.attempt_number, _reason(exc) if exc else "?", wait)


def _refuses_format(exc: BaseException | None) -> bool:
    """Whether ``exc`` is a server's refusal of the request's ``response_format`` (400/422/500 naming it:
    llama-cpp-python answers an unsupported ``json_schema`` with a 500), not a transient failure."""
    if not isinstance(exc, openai.APIStatusError) or exc.status_code not in (400, 422, 500):
        return False
    text = f"{exc.message} {exc.body}".lower()
    return any(word in text for word in _FORMAT_WORDS)


def _refuses_stream(exc: BaseException | None) -> bool:
    """Whether ``exc`` is a server's refusal of ``stream`` (400/422/500 naming it), not a transient failure."""
    if not isinstance(exc, openai.APIStatusError) or exc.status_code not in (400, 422, 500):
        return False
    return not _refuses_format(exc) and bool(_STREAM_WORD.search(f"{exc.message} {exc.body}"))


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, RETRYABLE) and not _refuses_format(exc) and not _refuses_stream(exc)


def _deadline(settings: Settings) -> float | None:
    """The monotonic time by which a call (all its attempts and formats) must end; None: unbounded."""
    return time.monotonic() + settings.llm_max_seconds if settings.llm_max_seconds else None


def _attempts(settings: Settings, deadline: float | None, kwargs: dict) -> tuple[float | None, AsyncRetrying]:
    """The seconds left of ``deadline`` (None: unbounded) and the retry policy for one request; adds
    ``max_tokens`` to the request's ``kwargs``. Raises LLMUnavailableError when no time is left."""
    if deadline is None:
        deadline = _deadline(settings)
    if settings.llm_max_tokens > 0:
        kwargs.setdefault("max_tokens", settings.llm_max_tokens)
    budget = None if deadline is None else deadline - time.monotonic()
    if budget is not None and budget <= 0:
        raise LLMUnavailableError(f"the language model did not answer within {settings.llm_max_seconds:g} s")
    stop = stop_after_attempt(max(1, settings.llm_max_attempts))
    if budget is not None:
        stop = stop | stop_before_delay(budget)
    return budget, AsyncRetrying(stop=stop, wait=_wait, retry=retry_if_exception(_retryable),
                                 before_sleep=_log_retry, reraise=True)


async def _create(client: openai.AsyncOpenAI, settings: Settings, deadline: float | None = None,
                  **kwargs) -> dict:
    """``client.chat.completions.create(**kwargs)`` (plus ``max_tokens``) with the retry policy, errors wrapped;
    the completion as the server sent it (a dict), read by us rather than the SDK so that no body, however
    broken, escapes as anything but :class:`LLMResponseError`. ``deadline``: see :func:`_deadline`."""
    budget, retrying = _attempts(settings, deadline, kwargs)
    started, tries = time.monotonic(), 0
    try:
        async with asyncio.timeout(budget):
            async for attempt in retrying:
                with attempt:
                    tries = attempt.retry_state.attempt_number
                    raw = await client.chat.completions.with_raw_response.create(model=settings.llm_model,
                                                                                 **kwargs)
    except TimeoutError as exc:
        raise LLMUnavailableError(
            f"the language model did not answer within {settings.llm_max_seconds:g} s") from exc
    except openai.OpenAIError as exc:
        raise _mapped(exc, tries, time.monotonic() - started) from exc
    return _completion(raw.http_response.content)


async def _stream(client: openai.AsyncOpenAI, settings: Settings, deadline: float | None,
                  on_content: Callable[[str], Awaitable[None]], **kwargs) -> dict:
    """:func:`_create` with ``stream=True``: ``on_content(the reply's content so far)`` is awaited whenever it
    grows, and the completion the chunks add up to is returned (what :func:`_content` reads). Opening the stream
    is retried like any request; a stream that breaks off (the connection, an error event, no end) is not: it
    raises LLMUnavailableError. A server that ignores ``stream`` and sends one completion is read as one."""
    budget, retrying = _attempts(settings, deadline, kwargs)
    started, tries = time.monotonic(), 0
    try:
        async with asyncio.timeout(budget), contextlib.AsyncExitStack() as stack:
            async for attempt in retrying:
                with attempt:
                    tries = attempt.retry_state.attempt_number
                    response = await stack.enter_async_context(
                        client.chat.completions.with_streaming_response.create(
                            model=settings.llm_model, stream=True, **kwargs))
            if "text/event-stream" not in response.headers.get("content-type", ""):
                return _completion(await _read_all(response))
            return await _read_stream(response.iter_lines(), on_content)
    except TimeoutError as exc:
        raise LLMUnavailableError(
            f"the language model did not answer within {settings.llm_max_seconds:g} s") from exc
    except openai.OpenAIError as exc:
        raise _mapped(exc, tries, time.monotonic() - started) from exc


async def _read_all(response) -> bytes:
    """The whole body of a streamed response; a connection that breaks off is an unavailable model."""
    try:
        return await response.read()
    except HTTP_ERRORS as exc:
        raise LLMUnavailableError(f"the language model's reply broke off ({_reason(exc)})") from exc


async def _next_line(lines: AsyncIterator[str]) -> str | None:
    """The next line of a stream, None at its end; a connection that breaks off is an unavailable model."""
    try:
        return await anext(lines)
    except StopAsyncIteration:
        return None
    except HTTP_ERRORS as exc:
        raise LLMUnavailableError(f"the language model's reply broke off ({_reason(exc)})") from exc


async def _events(lines: AsyncIterator[str]) -> AsyncIterator[str]:
    """The data of each server-sent event (``data: …`` lines up to a blank one), until ``[DONE]`` (the last one
    yielded) or the end."""
    data: list[str] = []
    while True:
        line = await _next_line(lines)
        if not line and data:
            payload, data = "\n".join(data).strip(), []
            yield payload
            if payload == "[DONE]":
                return
        if line is None:
            return
        name, _, value = line.partition(":")
        if name == "data":
            data.append(value[1:] if value.startswith(" ") else value)


def _chunk(payload: str) -> dict:
    """The first choice of a ``chat.completion.chunk`` ({} for a chunk without one, e.g. usage only)."""
    try:
        data = json.loads(payload)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise LLMResponseError("the language model's reply could not be read") from exc
    if isinstance(data, dict) and "error" in data:  # llama.cpp, vLLM: an error event in the stream
        raise LLMUnavailableError("the language model failed while writing its reply")
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list):
        raise LLMResponseError("the language model's reply is not a chat completion stream")
    return choices[0] if choices and isinstance(choices[0], dict) else {}


async def _read_stream(lines: AsyncIterator[str], on_content: Callable[[str], Awaitable[None]]) -> dict:
    """The completion a stream of chunks adds up to; ``on_content`` is awaited with the content so far."""
    parts: list[str] = []
    refusal, finish, done = None, None, False
    async for payload in _events(lines):
        if payload == "[DONE]":
            done = True
            continue
        choice = _chunk(payload)
        delta = choice.get("delta") if isinstance(choice.get("delta"), dict) else {}
        refusal = refusal or delta.get("refusal")
        finish = choice.get("finish_reason") or finish
        if isinstance(delta.get("content"), str) and delta["content"]:
            parts.append(delta["content"])
            await on_content("".join(parts))
    if not done and finish is None:
        raise LLMUnavailableError("the language model's reply broke off before its end")
    message = {"role": "assistant", "content": "".join(parts), "refusal": refusal}
    return {"choices": [{"index": 0, "finish_reason": finish, "message": message}]}


def _mapped(exc: openai.OpenAIError, tries: int, seconds: float) -> LLMUnavailableError | LLMResponseError:
    """Our error for an SDK error that ended the attempts."""
    if _retryable(exc):
        return LLMUnavailableError(f"the language model is unavailable: {_reason(exc)} after {tries} attempt(s) "
                                   f"in {seconds:.1f} s")
    if isinstance(exc, openai.APIStatusError):
        return LLMUnavailableError(f"the language model refused the request (HTTP {exc.status_code})")
    if isinstance(exc, openai.APIResponseValidationError):
        return LLMResponseError("the language model's reply could not be read")
    return LLMUnavailableError(f"the language model failed ({type(exc).__name__})")


def _completion(body: bytes) -> dict:
    """The completion JSON of a response body; a truncated, garbled or absurdly nested body is a bad reply."""
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LLMResponseError("the language model's reply could not be read") from exc
    except RecursionError as exc:
        raise LLMResponseError("the language model's reply is nested too deeply to read") from exc
    if not isinstance(data, dict):
        raise LLMResponseError("the language model's reply is not a chat completion")
    return data


def _content(completion: dict) -> str:
    """The text of the first choice; a refusal, a reply cut at ``max_tokens`` or an empty one is a bad reply."""
    choices = completion.get("choices")
    if not isinstance(choices, list) or not choices:
        raise LLMResponseError("the language model returned no choices")
    choice = choices[0]
    message = choice.get("message") if isinstance(choice, dict) else None
    if not isinstance(message, dict):
        raise LLMResponseError("the language model returned no message")
    if message.get("refusal"):
        raise LLMResponseError("the language model refused to answer")
    if choice.get("finish_reason") == "length":
        raise LLMResponseError("the language model's reply was cut off at the token limit (NEWSDESK_LLM_MAX_TOKENS)")
    content = message.get("content")
    if not isinstance(content, str) or not content.strip():
        raise LLMResponseError("the language model returned an empty reply")
    return content.strip()


# ---- parsing -------------------------------------------------------------------------------------

_FENCE = re.compile(r"```[ \t]*(?:json)?[ \t]*\n?(.*?)```", re.IGNORECASE | re.DOTALL)
_OPENING_FENCE = re.compile(r"^```[ \t]*(?:json)?\s*", re.IGNORECASE)


def _strip_fence(text: str) -> str:
    """The reply without a code fence around all of it (```json … ```)."""
    text = text.strip()
    if text.startswith("```") and text.endswith("```") and len(text) >= 6:
        text = text[3:-3]
        text = text[4:] if text[:4].lower() == "json" else text
    return text.strip()


def _candidates(content: str) -> Iterator[str]:
    """Where the JSON of a reply may be, most likely first: all of it (fence removed), then each fenced block."""
    yield _strip_fence(content)
    for match in _FENCE.finditer(content):
        yield match.group(1).strip()


def _loads(content: str) -> object:
    """The one JSON value in a reply, read tolerantly: the whole reply, a fenced block, or the first ``{…}``
    object that parses, with any text before or after it."""
    try:
        for text in _candidates(content):
            try:
                return json.loads(text)
            except json.JSONDecodeError:
                pass
        decoder = json.JSONDecoder()
        for match in islice(re.finditer(r"\{", content), MAX_JSON_STARTS):
            try:
                value, _ = decoder.raw_decode(content, match.start())
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                return value
    except RecursionError as exc:
        raise LLMResponseError("the language model's reply is nested too deeply to read") from exc
    raise LLMResponseError("the language model did not reply with JSON")


def _looks_like_json(content: str) -> bool:
    """Whether a reply at least tried to be JSON, fenced or not (so a server ignoring response_format did not
    cause its failure: asking again another way would not help)."""
    return _OPENING_FENCE.sub("", content.strip(), count=1)[:1] in ("{", "[")


def _keys(obj: object, keys: set[str], what: str) -> dict:
    if not isinstance(obj, dict) or set(obj) != keys:
        raise LLMResponseError(f"the language model's {what} does not match the cited_answer schema")
    return obj


def parse_cited_answer(content: str) -> dict:
    """Parse (tolerantly: code fences, text around the object) and strictly validate a ``cited_answer`` reply;
    return a clean copy (no sentences when ``answerable`` is false)."""
    data = _loads(content)
    _keys(data, {"answerable", "sentences"}, "reply")
    if not isinstance(data["answerable"], bool) or not isinstance(data["sentences"], list):
        raise LLMResponseError("the language model's reply does not match the cited_answer schema")
    sentences = []
    for raw in data["sentences"]:
        _keys(raw, {"text", "citations"}, "sentence")
        if not isinstance(raw["text"], str) or not isinstance(raw["citations"], list):
            raise LLMResponseError("the language model's sentence does not match the cited_answer schema")
        citations = []
        for cite in raw["citations"]:
            _keys(cite, {"source", "quote"}, "citation")
            source, quote = cite["source"], cite["quote"]
            if isinstance(source, bool) or not isinstance(source, int) or not isinstance(quote, str):
                raise LLMResponseError("the language model's citation does not match the cited_answer schema")
            citations.append({"source": source, "quote": quote})
        sentences.append({"text": raw["text"], "citations": citations})
    return {"answerable": data["answerable"], "sentences": sentences if data["answerable"] else []}


# ---- streaming: what to show while the reply is written -------------------------------------------

_TEXT_VALUE = re.compile(r'"text"\s*:\s*"((?:[^"\\]|\\.)*)(")?', re.DOTALL)  # closed or still being written
_UNANSWERABLE = re.compile(r'"answerable"\s*:\s*false')
_PARTIAL_ESCAPE = re.compile(r"\\u[0-9a-fA-F]{0,3}$")
_SURROGATE = re.compile("[\ud800-\udfff]")  # half of a pair whose other half is not written yet
_MARKERS = re.compile(r"\s*\[\s*\d+(?:\s*,\s*\d+)*\s*\]")  # the model's own "[1]": verify drops them too
_PARTIAL_MARKER = re.compile(r"\s*\[[\d,\s]*$")
_LENIENT = json.JSONDecoder(strict=False)  # a raw newline in a string must not hide the text written so far


def _string(body: str, closed: bool) -> str | None:
    """The JSON string ``"body"`` decoded; of a string still being written, the part that can be."""
    if not closed:
        body = _PARTIAL_ESCAPE.sub("", body)
    try:
        text = _LENIENT.decode(f'"{body}"')
    except json.JSONDecodeError:
        return None
    text = _MARKERS.sub("", _SURROGATE.sub("", text))
    return _PARTIAL_MARKER.sub("", text) if not closed else text


def readable(content: str) -> str:
    """What a reader can see of a ``cited_answer`` reply still being written (partial JSON, cut anywhere): the
    sentence texts so far, the last one perhaps half-written, without the model's ``[n]`` markers, joined by
    spaces. Never the raw JSON, never the quotes (they are checked and shown with the final answer)."""
    if _UNANSWERABLE.search(content):
        return ""
    texts = []
    for match in _TEXT_VALUE.finditer(content):
        text = _string(match.group(1), match.group(2) is not None)
        if text and text.strip():
            texts.append(" ".join(text.split()))
    return " ".join(texts)


def _progress_reader(on_progress: Progress) -> Callable[[str], Awaitable[None]]:
    """An ``on_content`` for :func:`_stream` that awaits ``on_progress`` with the readable text when it changed."""
    shown = ""

    async def on_content(content: str) -> None:
        nonlocal shown
        text = readable(content)
        if text != shown:
            shown = text
            await on_progress(text)

    return on_content


# ---- public --------------------------------------------------------------------------------------

def _server(settings: Settings) -> tuple[str, str]:
    return ((settings.openai_base_url or "https://api.openai.com/v1").rstrip("/"), settings.llm_model)


async def complete_cited_answer(client: openai.AsyncOpenAI, settings: Settings, question: str,
                                hits: Sequence[Hit], history: Sequence[Turn] = (),
                                on_progress: Progress | None = None) -> dict:
    """Ask the model to answer ``question`` from ``hits`` (numbered 1..k); return the validated
    ``{"answerable": bool, "sentences": [{"text": str, "citations": [{"source": int, "quote": str}]}]}``.

    Starts with the best response_format this server is known to take (see the module's docstring) and steps
    down when it is refused or ignored, all within ``settings.llm_max_seconds``. With ``on_progress`` the reply
    is streamed (unless the server refuses it) and ``on_progress`` is awaited with :func:`readable` text as it
    grows; what it was shown is unverified, the caller replaces it with the verified answer.
    Raises LLMUnavailableError (after the retries) or LLMResponseError (not valid cited_answer JSON)."""
    messages = cited_answer_messages(question, hits, history)
    server, deadline = _server(settings), _deadline(settings)
    level = FORMAT_CACHE.get(server, 0)
    while True:
        name, response_format = FORMATS[level]
        extra = {"response_format": response_format} if response_format is not None else {}
        last = level + 1 == len(FORMATS)
        streaming = on_progress is not None and STREAM_CACHE.get(server, True)
        try:
            if streaming:
                completion = await _stream(client, settings, deadline, _progress_reader(on_progress),
                                           messages=messages, **extra)
            else:
                completion = await _create(client, settings, deadline, messages=messages, **extra)
        except LLMUnavailableError as exc:
            if streaming and _refuses_stream(exc.__cause__):
                log.info("the language model server refuses stream; asking without it")
                STREAM_CACHE[server] = False
                continue
            if last or not _refuses_format(exc.__cause__):
                raise
            log.info("the language model server refuses response_format %s; trying %s", name, FORMATS[level + 1][0])
            level = FORMAT_CACHE[server] = level + 1
            continue
        content = _content(completion)
        try:
            answer = parse_cited_answer(content)
        except LLMResponseError:
            if last or _looks_like_json(content):
                raise
            log.info("the language model ignored response_format %s; trying %s", name, FORMATS[level + 1][0])
            level += 1
            continue
        FORMAT_CACHE[server] = level
        return answer


async def standalone_question(client: openai.AsyncOpenAI, settings: Settings, question: str,
                              history: Sequence[Turn]) -> str:
    """Rewrite a follow-up (``"and what did Azerbaijan say?"``) into a question that stands on its own.
    Without history the question is returned as it is, without calling the model."""
    if not history:
        return question
    max_tokens = min(settings.llm_max_tokens, STANDALONE_MAX_TOKENS) or STANDALONE_MAX_TOKENS
    completion = await _create(client, settings, messages=standalone_messages(question, history),
                               max_tokens=max_tokens)
    text = _content(completion).splitlines()[0].strip().strip("\"'“”«»").strip()
    if not text:
        raise LLMResponseError("the language model returned an empty question")
    return text
