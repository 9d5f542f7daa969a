"""Calls to the language model: a cited answer as strict JSON, and follow-up questions made standalone.

Everything the model is told lives in ``prompts/*.txt``. Transient failures (429, 5xx, timeouts, connection
errors) are retried with exponential backoff and jitter, honouring ``Retry-After``, bounded by
``settings.llm_max_attempts`` attempts and ``settings.llm_max_seconds`` in total; then, or at once for a
refused request (400/401/403/404…), :class:`LLMUnavailableError` is raised. A reply that is not valid
``cited_answer`` JSON raises :class:`LLMResponseError`. Quotes are checked later, by ``bot.verify``.
"""

from __future__ import annotations

import asyncio
import email.utils
import html
import json
import logging
import math
import random
import re
import time
from collections.abc import Sequence
from functools import cache
from importlib.resources import files
from string import Template

import openai
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
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
    if isinstance(exc, openai.APITimeoutError):
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


async def _create(client: openai.AsyncOpenAI, settings: Settings, **kwargs) -> object:
    """``client.chat.completions.create(**kwargs)`` with the retry policy, errors wrapped."""
    attempts = max(1, settings.llm_max_attempts)
    stop = stop_after_attempt(attempts)
    budget = settings.llm_max_seconds or None
    if budget:
        stop = stop | stop_before_delay(budget)
    retrying = AsyncRetrying(stop=stop, wait=_wait, retry=retry_if_exception_type(RETRYABLE),
                             before_sleep=_log_retry, reraise=True)
    started, tries = time.monotonic(), 0
    try:
        async with asyncio.timeout(budget):
            async for attempt in retrying:
                with attempt:
                    tries = attempt.retry_state.attempt_number
                    return await client.chat.completions.create(model=settings.llm_model, **kwargs)
    except TimeoutError as exc:
        raise LLMUnavailableError(f"the language model did not answer within {budget:g} s") from exc
    except RETRYABLE as exc:
        raise LLMUnavailableError(
            f"the language model is unavailable: {_reason(exc)} after {tries} attempt(s) in "
            f"{time.monotonic() - started:.1f} s") from exc
    except openai.APIStatusError as exc:
        raise LLMUnavailableError(f"the language model refused the request (HTTP {exc.status_code})") from exc
    except openai.APIResponseValidationError as exc:
        raise LLMResponseError("the language model's reply could not be read") from exc
    except openai.OpenAIError as exc:
        raise LLMUnavailableError(f"the language model failed ({type(exc).__name__})") from exc
    raise AssertionError("unreachable")  # pragma: no cover


def _content(completion: object) -> str:
    choices = getattr(completion, "choices", None)
    if not choices:
        raise LLMResponseError("the language model returned no choices")
    message = choices[0].message
    if getattr(message, "refusal", None):
        raise LLMResponseError("the language model refused to answer")
    if not isinstance(message.content, str) or not message.content.strip():
        raise LLMResponseError("the language model returned an empty reply")
    return message.content.strip()


# ---- parsing -------------------------------------------------------------------------------------

def _strip_fence(text: str) -> str:
    if text.startswith("```") and text.endswith("```"):
        text = text[3:-3].removeprefix("json")
    return text.strip()


def _keys(obj: object, keys: set[str], what: str) -> dict:
    if not isinstance(obj, dict) or set(obj) != keys:
        raise LLMResponseError(f"the language model's {what} does not match the cited_answer schema")
    return obj


def parse_cited_answer(content: str) -> dict:
    """Parse and strictly validate a ``cited_answer`` reply; return a clean copy (no sentences when
    ``answerable`` is false)."""
    try:
        data = json.loads(_strip_fence(content))
    except json.JSONDecodeError as exc:
        raise LLMResponseError("the language model did not reply with JSON") from exc
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


# ---- public --------------------------------------------------------------------------------------

async def complete_cited_answer(client: openai.AsyncOpenAI, settings: Settings, question: str,
                                hits: Sequence[Hit], history: Sequence[Turn] = ()) -> dict:
    """Ask the model to answer ``question`` from ``hits`` (numbered 1..k); return the validated
    ``{"answerable": bool, "sentences": [{"text": str, "citations": [{"source": int, "quote": str}]}]}``.

    Raises LLMUnavailableError (after the retries) or LLMResponseError (not valid cited_answer JSON)."""
    completion = await _create(client, settings, messages=cited_answer_messages(question, hits, history),
                               response_format=RESPONSE_FORMAT)
    return parse_cited_answer(_content(completion))


async def standalone_question(client: openai.AsyncOpenAI, settings: Settings, question: str,
                              history: Sequence[Turn]) -> str:
    """Rewrite a follow-up (``"and what did Azerbaijan say?"``) into a question that stands on its own.
    Without history the question is returned as it is, without calling the model."""
    if not history:
        return question
    completion = await _create(client, settings, messages=standalone_messages(question, history))
    text = _content(completion).splitlines()[0].strip().strip("\"'“”«»").strip()
    if not text:
        raise LLMResponseError("the language model returned an empty question")
    return text
