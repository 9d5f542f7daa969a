"""The one settings object, built once from the environment and ``.env``, and passed down.

This is the only module that reads ``os.environ``. Every setting is listed, with a comment, in
``.env.example``. Values from the real environment win over values from ``.env``.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from dotenv import dotenv_values

from .errors import ConfigError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{name} must be 1/0, true/false, yes/no or on/off, not {raw!r}")


def _num(env: Mapping[str, str], name: str, default, kind=int):
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, not {raw!r}") from None
    if value < 0:
        raise ConfigError(f"{name} must not be negative")
    return value


def _ids(env: Mapping[str, str], name: str) -> frozenset[int]:
    raw = env.get(name) or ""
    out = set()
    for part in raw.replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            out.add(int(part))
        except ValueError:
            raise ConfigError(f"{name} must be a comma-separated list of numeric Telegram ids") from None
    return frozenset(out)


def _str(env: Mapping[str, str], name: str, default: str | None = None) -> str | None:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    return raw.strip()


def _path(env: Mapping[str, str], name: str) -> Path | None:
    raw = _str(env, name)
    return Path(raw).expanduser() if raw else None


# the store keeps four Chroma collections per index name, ``<name>-<kind>`` (see ``index.store``)
STORE_COLLECTIONS = ("passages", "accurate", "articles", "texts")
# a rebuilt index's collections are ``<name>-<kind>-g<8 hex>`` (see ``index.store``)
_REBUILT = "-g00000000"
# Chroma's rule for a collection name (chromadb 1.5, checked by its Rust core)
_CHROMA_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9._-]{1,510}[a-zA-Z0-9]")


def _collection(env: Mapping[str, str]) -> str:
    """NEWSDESK_COLLECTION, checked against Chroma's naming rules for every collection the store derives from it
    (3–512 characters from a-z, A-Z, 0-9, ``.``, ``_``, ``-``, starting and ending with a letter or digit, no
    ``..``, not an IP address): a bad name is a one-line error here, not an empty index later."""
    name = _str(env, "NEWSDESK_COLLECTION", "newsdesk")
    longest = max(len(kind) for kind in STORE_COLLECTIONS) + 1 + len(_REBUILT)
    for full in (f"{name}-{kind}{rebuilt}" for kind in STORE_COLLECTIONS for rebuilt in ("", _REBUILT)):
        if not _CHROMA_NAME.fullmatch(full) or ".." in full or _is_ip(full):
            raise ConfigError(f"NEWSDESK_COLLECTION must be 1 to {512 - longest} characters from a-z, A-Z, 0-9, "
                              f"'.', '_' and '-', starting with a letter or digit and without '..', not {name!r}")
    return name


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Settings:
    # where the embedded index lives, and the Chroma server when there is one
    home: Path = Path(".newsdesk")
    chroma_host: str | None = None
    chroma_port: int = 8000
    collection: str = "newsdesk"
    # embedders: stage 1 ("local" = USE-multilingual, or "openai"), stage 2 accurate vectors ("e5" or "off")
    embedder: str = "local"
    accurate: str = "e5"
    latent_terms: bool = True  # with stage 2: e5's latent terms choose between an article's paragraphs
    embed_threads: int = 2
    embed_batch: int = 32
    # OpenAI or any OpenAI-compatible server
    openai_api_key: str | None = field(default=None, repr=False)
    openai_base_url: str | None = None
    llm_model: str = "gpt-4o-mini"
    openai_embed_model: str = "text-embedding-3-small"
    llm_timeout: float = 150.0  # read timeout of one request: a local server sends nothing until it is done
    llm_connect_timeout: float = 5.0
    llm_max_attempts: int = 4
    llm_max_seconds: float = 180.0  # one question, every attempt and response_format included
    llm_max_tokens: int = 1024  # 0: send no max_tokens
    # loading articles
    max_file_mb: float = 10.0
    fetch_timeout: float = 20.0
    allow_private_urls: bool = False
    articles_dir: Path | None = None
    feed_interval: float = 900.0  # seconds between polls of the feed list (`newsdesk watch`, the bot; 0: bot off)
    # answering
    top_k: int = 5
    # Telegram
    telegram_bot_token: str | None = field(default=None, repr=False)
    telegram_api_base_url: str | None = None
    telegram_admin_ids: frozenset[int] = frozenset()
    telegram_allowed_chat_ids: frozenset[int] = frozenset()
    telegram_webhook_url: str | None = None
    telegram_webhook_port: int = 8443
    telegram_webhook_secret: str | None = field(default=None, repr=False)
    rate_limit_per_minute: int = 10
    history_turns: int = 4
    history_ttl_seconds: int = 1800
    conversations_file: Path | None = None  # None: <home>/conversations.sqlite3 (``conversations_path``)
    conversations_max_days: float = 30.0  # conversations (and their source buttons) unused longer are forgotten
    upload_max_mb: float = 5.0
    log_level: str | None = None  # None: the command's own default (INFO for the bot, WARNING otherwise)

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None, env_file: str | Path | None = ".env",
             **overrides) -> Settings:
        """Build the settings from ``.env`` (if present) overlaid by ``environ`` (default: the process
        environment), then apply explicit ``overrides`` (e.g. the CLI's ``--home``)."""
        env: dict[str, str] = {}
        if env_file is not None and Path(env_file).is_file():
            env.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
        env.update(os.environ if environ is None else environ)
        embedder = (_str(env, "NEWSDESK_EMBEDDER", "local") or "local").lower()
        if embedder not in {"local", "openai"}:
            raise ConfigError(f"NEWSDESK_EMBEDDER must be 'local' or 'openai', not {embedder!r}")
        accurate = (_str(env, "NEWSDESK_ACCURATE", "e5") or "e5").lower()
        if accurate not in {"e5", "off"}:
            raise ConfigError(f"NEWSDESK_ACCURATE must be 'e5' or 'off', not {accurate!r}")
        articles_dir = _str(env, "NEWSDESK_ARTICLES_DIR")
        settings = cls(
            home=Path(_str(env, "NEWSDESK_HOME", ".newsdesk")).expanduser(),
            chroma_host=_str(env, "CHROMA_HOST"),
            chroma_port=_num(env, "CHROMA_PORT", 8000),
            collection=_collection(env),
            embedder=embedder,
            accurate=accurate,
            latent_terms=_bool(env, "NEWSDESK_LATENT_TERMS", True),
            embed_threads=_num(env, "NEWSDESK_EMBED_THREADS", 2) or 1,
            embed_batch=_num(env, "NEWSDESK_EMBED_BATCH", 32) or 1,
            openai_api_key=_str(env, "OPENAI_API_KEY"),
            openai_base_url=_str(env, "OPENAI_BASE_URL"),
            llm_model=_str(env, "NEWSDESK_LLM_MODEL", "gpt-4o-mini"),
            openai_embed_model=_str(env, "NEWSDESK_OPENAI_EMBED_MODEL", "text-embedding-3-small"),
            llm_timeout=_num(env, "NEWSDESK_LLM_TIMEOUT", 150.0, float),
            llm_connect_timeout=_num(env, "NEWSDESK_LLM_CONNECT_TIMEOUT", 5.0, float),
            llm_max_attempts=_num(env, "NEWSDESK_LLM_MAX_ATTEMPTS", 4) or 1,
            llm_max_seconds=_num(env, "NEWSDESK_LLM_MAX_SECONDS", 180.0, float),
            llm_max_tokens=_num(env, "NEWSDESK_LLM_MAX_TOKENS", 1024),
            max_file_mb=_num(env, "NEWSDESK_MAX_FILE_MB", 10.0, float),
            fetch_timeout=_num(env, "NEWSDESK_FETCH_TIMEOUT", 20.0, float),
            allow_private_urls=_bool(env, "NEWSDESK_ALLOW_PRIVATE_URLS", False),
            articles_dir=Path(articles_dir).expanduser() if articles_dir else None,
            feed_interval=_num(env, "NEWSDESK_FEED_INTERVAL", 900.0, float),
            top_k=_num(env, "NEWSDESK_TOP_K", 5) or 1,
            telegram_bot_token=_str(env, "TELEGRAM_BOT_TOKEN"),
            telegram_api_base_url=_str(env, "TELEGRAM_API_BASE_URL"),
            telegram_admin_ids=_ids(env, "TELEGRAM_ADMIN_IDS"),
            telegram_allowed_chat_ids=_ids(env, "TELEGRAM_ALLOWED_CHAT_IDS"),
            telegram_webhook_url=_str(env, "TELEGRAM_WEBHOOK_URL"),
            telegram_webhook_port=_num(env, "TELEGRAM_WEBHOOK_PORT", 8443),
            telegram_webhook_secret=_str(env, "TELEGRAM_WEBHOOK_SECRET"),
            rate_limit_per_minute=_num(env, "NEWSDESK_RATE_LIMIT_PER_MINUTE", 10),
            history_turns=_num(env, "NEWSDESK_HISTORY_TURNS", 4),
            history_ttl_seconds=_num(env, "NEWSDESK_HISTORY_TTL_SECONDS", 1800),
            conversations_file=_path(env, "NEWSDESK_CONVERSATIONS_FILE"),
            conversations_max_days=_num(env, "NEWSDESK_CONVERSATIONS_MAX_DAYS", 30.0, float),
            upload_max_mb=_num(env, "NEWSDESK_UPLOAD_MAX_MB", 5.0, float),
            log_level=(_str(env, "NEWSDESK_LOG_LEVEL") or "").upper() or None,
        )
        return replace(settings, **{k: v for k, v in overrides.items() if v is not None})

    @property
    def max_file_bytes(self) -> int:
        return int(self.max_file_mb * 1024 * 1024)

    @property
    def llm_enabled(self) -> bool:
        return bool(self.openai_api_key)

    @property
    def store_label(self) -> str:
        if self.chroma_host:
            return f"chroma server http://{self.chroma_host}:{self.chroma_port}"
        return f"embedded chroma at {self.home}"

    @property
    def lexical_dir(self) -> Path:
        """Where the searcher saves its lexical index: a cache, one file per indexed collection."""
        return self.home / "lexical"

    @property
    def conversations_path(self) -> Path:
        """Where the conversations and the answers behind source buttons are kept (``bot.conversation``)."""
        return self.conversations_file or self.home / "conversations.sqlite3"

    @property
    def feedback_path(self) -> Path:
        """Where the 👍/👎 votes on answers are appended, one JSON line each (``bot.feedback``)."""
        return self.home / "feedback.jsonl"
