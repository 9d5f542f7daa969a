"""The only place that constructs OpenAI clients (chat completions and OpenAI embeddings).

Both talk to ``settings.openai_base_url`` (OpenAI itself when unset) with the SDK's own retries turned off:
retrying is done by the caller (``bot.llm``), which knows the time budget. Connecting gets
``settings.llm_connect_timeout`` seconds, and every read (a local server sends nothing until the whole answer
is written) ``settings.llm_timeout``.
"""

from __future__ import annotations

import logging

import httpx
import openai

from .errors import ConfigError
from .settings import Settings

# httpx logs every request at INFO, with the URL; keep the log for what matters.
logging.getLogger("httpx").setLevel(logging.WARNING)


def _timeout(settings: Settings) -> httpx.Timeout:
    return httpx.Timeout(settings.llm_timeout, connect=settings.llm_connect_timeout or None)


def _api_key(settings: Settings) -> str:
    if not settings.openai_api_key:
        raise ConfigError("OPENAI_API_KEY is not set")
    return settings.openai_api_key


def make_async_client(settings: Settings) -> openai.AsyncOpenAI:
    """An async client for chat completions; no SDK retries, the connect and read timeouts of the settings."""
    return openai.AsyncOpenAI(api_key=_api_key(settings), base_url=settings.openai_base_url,
                              max_retries=0, timeout=_timeout(settings))


def make_sync_client(settings: Settings) -> openai.OpenAI:
    """A blocking client (for OpenAI embeddings); same settings as :func:`make_async_client`."""
    return openai.OpenAI(api_key=_api_key(settings), base_url=settings.openai_base_url,
                         max_retries=0, timeout=_timeout(settings))
