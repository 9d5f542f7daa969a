"""The Telegram front end: python-telegram-bot handlers that translate updates into engine / index calls,
and answers into Telegram HTML (rendered by :mod:`bot.telegram_render`). The only module that imports
``telegram``.

Questions go to :meth:`Engine.ask` (async); blocking index calls run through ``asyncio.to_thread``. Updates
are handled concurrently, so a slow answer in one chat does not hold up another. Per-chat state (follow-up
history, the citations behind the source buttons) lives in one :class:`bot.conversation.Conversations`, keyed
by chat id, the same module ``newsdesk chat`` uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import tempfile
import threading
import time
import warnings
from collections import deque
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlparse

from telegram import (
    BotCommand,
    Chat,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    LinkPreviewOptions,
    Message,
    MessageEntity,
    ReplyParameters,
    Update,
)
from telegram.constants import ChatAction, ParseMode
from telegram.error import InvalidToken, NetworkError, RetryAfter, TelegramError
from telegram.ext import (
    Application,
    ApplicationBuilder,
    ApplicationHandlerStop,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    TypeHandler,
    filters,
)

from newsdesk.index.errors import ConfigError, NewsdeskError
from newsdesk.index.fetch import strip_userinfo
from newsdesk.index.loaders import EXTENSIONS
from newsdesk.index.settings import Settings

from . import telegram_render as render
from .conversation import Conversations
from .engine import Engine
from .startup import quiet_http_loggers

log = logging.getLogger(__name__)

TYPING_EVERY = 4.0  # seconds; Telegram shows "typing…" for about 5 s
FILL_EVERY = 30.0  # seconds between checks for passages still missing accurate vectors
FILL_BATCH = 4  # passages per e5 call in the background: a question waits for at most one such call
FILL_PAUSE = 0.5  # seconds between the background fill's rounds of 32 passages (another writer may be waiting)
MAX_RETRY_WAIT = 60.0  # flood control: longer waits are not worth holding a handler for
ALLOWED_UPDATES = [Update.MESSAGE, Update.CALLBACK_QUERY]
NEW_MESSAGE = filters.UpdateType.MESSAGE  # not edits, not channel posts
_SAFE_NAME = re.compile(r"[^\w.-]+")
_SOURCE_BUTTON = re.compile(r"^src:([\w-]{1,16}):(\d{1,3})$")


# -- small helpers -----------------------------------------------------------------------------------------

class RateLimiter:
    """At most ``per_minute`` events per key in any rolling 60 s (0 = no limit)."""

    def __init__(self, per_minute: int, window: float = 60.0) -> None:
        self.per_minute, self.window = per_minute, window
        self._hits: dict[int, deque[float]] = {}

    def wait(self, key: int, now: float | None = None) -> float:
        """0 and the event is counted, or the seconds until one is allowed again."""
        if self.per_minute <= 0:
            return 0.0
        now = time.monotonic() if now is None else now
        hits = self._hits.setdefault(key, deque())
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        if len(hits) >= self.per_minute:
            return hits[0] + self.window - now
        hits.append(now)
        if len(self._hits) > 10_000:  # forget idle users
            self._hits = {k: v for k, v in self._hits.items() if v and v[-1] > now - self.window}
        return 0.0


class _RedactToken(logging.Filter):
    """Replaces the bot token in log records (PTB logs its API URL at DEBUG, and InvalidToken quotes it)."""

    def __init__(self, token: str) -> None:
        super().__init__()
        self.token = token

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self.token in message:
            record.msg, record.args = message.replace(self.token, "<token>"), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text and self.token in record.exc_text:
            record.exc_text = record.exc_text.replace(self.token, "<token>")
        return True


def _protect_logs(token: str) -> None:
    """The token never reaches a log: httpx and httpcore at WARNING (as at start-up, for an application built
    without it), and every Telegram and HTTP logger's records redacted."""
    quiet_http_loggers()
    roots = {"telegram", "httpx", "httpcore"}
    names = [n for n in logging.Logger.manager.loggerDict if n.split(".")[0] in roots]
    for name in {*names, "telegram", __name__}:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _RedactToken) and f.token == token for f in logger.filters):
            logger.addFilter(_RedactToken(token))


def safe_filename(name: str | None, default_ext: str = ".txt") -> str:
    """A file name that is safe to create in a temp folder: the basename only, odd characters replaced,
    no leading dots, the (lower-cased) extension kept."""
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    stem, dot, ext = base.rpartition(".")
    if not dot:
        stem, ext = base, ""
    stem = _SAFE_NAME.sub("_", stem).strip("._-")[:80] or "upload"
    ext = _SAFE_NAME.sub("", ext).lower()[:8] or default_ext.lstrip(".")
    return f"{stem}.{ext}"


def _file_base_url(base_url: str) -> str | None:
    """``http://host/bot`` → ``http://host/file/bot`` (the Bot API's file download URL)."""
    at = base_url.rfind("/bot")
    return base_url[:at] + "/file" + base_url[at:] if at >= 0 else None


def _seconds(value) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def _missing_token() -> ConfigError:
    return ConfigError("TELEGRAM_BOT_TOKEN is not set: create a bot with @BotFather and put its token in the "
                       "environment or .env")


async def _retry(call, attempts: int = 3):
    """Run ``call()`` (a Bot API request), waiting out flood control (RetryAfter) a few times."""
    for attempt in range(attempts):
        try:
            return await call()
        except RetryAfter as exc:
            with warnings.catch_warnings():  # the int/timedelta deprecation of retry_after
                warnings.simplefilter("ignore")
                wait = _seconds(exc.retry_after)
            if attempt == attempts - 1 or wait > MAX_RETRY_WAIT:
                raise
            log.warning("flood control: waiting %.0f s before retrying", wait)
            await asyncio.sleep(wait + 0.1)


@contextlib.asynccontextmanager
async def typing(bot, chat_id: int):
    """Show "typing…" in the chat until the block ends."""
    async def keep_typing():
        while True:
            with contextlib.suppress(TelegramError):
                await bot.send_chat_action(chat_id, ChatAction.TYPING)
            await asyncio.sleep(TYPING_EVERY)

    task = asyncio.create_task(keep_typing())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# -- the bot ---------------------------------------------------------------------------------------------

Context = ContextTypes.DEFAULT_TYPE


class NewsdeskBot:
    """The handlers, with the engine, the settings and the rate limiter they share."""

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings, self.engine, self.index = settings, engine, engine.index
        self.limiter = RateLimiter(settings.rate_limit_per_minute)
        self.conversations = Conversations(settings.history_turns, settings.history_ttl_seconds)
        self._stopping = threading.Event()
        self._fill_task: asyncio.Task | None = None
        self._articles: tuple[str, list[dict]] | None = None  # (store generation, the article list then)

    # sending

    async def send(self, bot, chat_id: int, texts: list[str] | str, *, reply_to: Message | None = None,
                   markup=None) -> None:
        """Send HTML message(s); the first replies to ``reply_to``, the last carries ``markup``."""
        texts = [texts] if isinstance(texts, str) else texts
        thread = reply_to.message_thread_id if reply_to is not None and reply_to.is_topic_message else None
        for i, text in enumerate(texts):
            quote = None
            if reply_to is not None and i == 0:
                quote = ReplyParameters(reply_to.message_id, allow_sending_without_reply=True)
            options = {"parse_mode": ParseMode.HTML, "message_thread_id": thread, "reply_parameters": quote,
                       "link_preview_options": LinkPreviewOptions(is_disabled=True),
                       "reply_markup": markup if i == len(texts) - 1 else None}
            await _retry(lambda text=text, options=options: bot.send_message(chat_id, text, **options))

    async def reply(self, update: Update, context: Context, texts: list[str] | str) -> None:
        await self.send(context.bot, update.effective_chat.id, texts, reply_to=update.effective_message)

    # lifecycle

    async def post_init(self, app: Application) -> None:
        await _retry(lambda: app.bot.set_my_commands([BotCommand(n, d) for n, d in render.COMMANDS]))
        self._stopping.clear()
        self._fill_task = asyncio.create_task(self._background(), name="newsdesk-fill-accurate")
        log.info("newsdesk bot @%s is up", app.bot.username)

    async def post_shutdown(self, app: Application) -> None:
        self._stopping.set()
        if self._fill_task is not None:
            self._fill_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._fill_task
            self._fill_task = None

    async def _background(self) -> None:
        """Load the embedders before the first question, then fill in stage-2 vectors in small batches."""
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self.index.search, "warm-up", 1)
        while not self._stopping.is_set():
            try:
                # wait=False: while another process (`newsdesk index`) writes, the round is skipped; the pause
                # between batches lets a writer that waits for the lock have it
                while not self._stopping.is_set() and await asyncio.to_thread(
                        self.index.fill_accurate, limit=32, should_stop=self._stopping.is_set,
                        batch=FILL_BATCH, wait=False) > 0:
                    await asyncio.sleep(FILL_PAUSE)
            except NewsdeskError as exc:
                log.warning("accurate vectors: %s", exc)
            except Exception:
                log.exception("accurate vectors: unexpected error")
            await asyncio.sleep(FILL_EVERY)

    # guarding

    def _addressed(self, message: Message, bot) -> tuple[bool, str]:
        """Whether a message is meant for the bot, and its text without the @mention. In a private chat every
        message is; in a group only a mention of the bot or a reply to one of its messages."""
        text = message.text or message.caption or ""
        if message.chat.type == Chat.PRIVATE:
            return True, text
        addressed = False
        kinds = [MessageEntity.MENTION, MessageEntity.TEXT_MENTION]
        entities = message.parse_entities(kinds) if message.text else message.parse_caption_entities(kinds)
        for entity, value in entities.items():
            if entity.type == MessageEntity.MENTION:
                mine = value.lower() == f"@{bot.username}".lower()
            else:
                mine = entity.user is not None and entity.user.id == bot.id
            if mine:
                addressed, text = True, text.replace(value, " ", 1)
        replied = message.reply_to_message
        if replied is not None and replied.from_user is not None and replied.from_user.id == bot.id:
            addressed = True
        return addressed, text

    async def guard(self, update: Update, context: Context) -> None:
        """Runs before every handler: when an allow-list is set, other chats and users get one polite line."""
        allowed = self.settings.telegram_allowed_chat_ids
        chat, user = update.effective_chat, update.effective_user
        if not allowed or (chat and chat.id in allowed) or (user and user.id in allowed):
            return
        if update.callback_query:
            await _retry(lambda: update.callback_query.answer(render.PRIVATE))
        elif update.message and (self._addressed(update.message, context.bot)[0]
                                 or (update.message.text or "").startswith("/")):
            await self.reply(update, context, render.PRIVATE)
        raise ApplicationHandlerStop

    async def _slowed(self, update: Update, context: Context) -> bool:
        """Count a request that costs the server work (a question, /sources, /stats) against the sender's rate
        limit; when it is over the limit, say when to try again and return True."""
        who = update.effective_user or update.effective_chat
        if wait := self.limiter.wait(who.id):
            await self.reply(update, context, render.SLOW_DOWN.format(seconds=math.ceil(wait)))
            return True
        return False

    def _is_admin(self, update: Update) -> bool:
        user = update.effective_user
        return user is not None and user.id in self.settings.telegram_admin_ids

    # questions

    async def answer(self, update: Update, context: Context, question: str) -> None:
        question = question.strip()
        if not question:
            return await self.reply(update, context, render.ASK_SOMETHING)
        if len(question) > render.MAX_QUESTION_CHARS:
            return await self.reply(update, context,
                                    render.TOO_LONG.format(n=len(question), limit=render.MAX_QUESTION_CHARS))
        if await self._slowed(update, context):
            return
        chat_id = update.effective_chat.id
        async with typing(context.bot, chat_id):
            answer = await self.engine.ask(question, self.conversations.history(chat_id))
        key = self.conversations.remember(chat_id, question, answer)
        buttons = [InlineKeyboardButton(f"[{c.n}]", callback_data=f"src:{key}:{c.n}")
                   for c in answer.citations]
        rows = [buttons[i:i + 5] for i in range(0, len(buttons), 5)]
        markup = InlineKeyboardMarkup(rows) if rows else None
        await self.send(context.bot, update.effective_chat.id, render.answer_messages(answer),
                        reply_to=update.effective_message, markup=markup)

    async def on_text(self, update: Update, context: Context) -> None:
        addressed, text = self._addressed(update.message, context.bot)
        if addressed:
            await self.answer(update, context, text)

    async def cmd_ask(self, update: Update, context: Context) -> None:
        parts = (update.message.text or "").split(maxsplit=1)
        await self.answer(update, context, parts[1] if len(parts) > 1 else "")

    async def on_other(self, update: Update, context: Context) -> None:
        """Stickers, photos, voice…: a short hint, when meant for the bot."""
        if self._addressed(update.message, context.bot)[0]:
            await self.reply(update, context, render.ONLY_TEXT)

    async def on_unknown_command(self, update: Update, context: Context) -> None:
        if update.effective_chat.type == Chat.PRIVATE:
            await self.reply(update, context, render.UNKNOWN_COMMAND)

    async def on_source_button(self, update: Update, context: Context) -> None:
        query = update.callback_query
        match = _SOURCE_BUTTON.match(query.data or "")
        chat = update.effective_chat
        citation = None
        if match and chat is not None:
            citation = self.conversations.citation(chat.id, match.group(1), int(match.group(2)))
        if citation is None:
            return await _retry(lambda: query.answer(render.EXPIRED, show_alert=True))
        await _retry(lambda: query.answer())
        await self.send(context.bot, update.effective_chat.id, render.passage_messages(citation),
                        reply_to=query.message if isinstance(query.message, Message) else None)

    # commands

    async def cmd_help(self, update: Update, context: Context) -> None:
        await self.reply(update, context, render.help_text(self.settings))

    async def cmd_new(self, update: Update, context: Context) -> None:
        self.conversations.reset(update.effective_chat.id)
        await self.reply(update, context, render.NEW_CONVERSATION)

    async def cmd_sources(self, update: Update, context: Context) -> None:
        if await self._slowed(update, context):
            return
        rows = await asyncio.to_thread(self.article_list)
        await self.reply(update, context, render.sources_messages(rows))

    async def cmd_stats(self, update: Update, context: Context) -> None:
        if await self._slowed(update, context):
            return
        stats = await asyncio.to_thread(self.index.stats)  # counts only: cheap, and always current
        await self.reply(update, context, render.stats_text(stats))

    def article_list(self) -> list[dict]:
        """The indexed articles (blocking): read from the store only when its generation token changed since the
        last read (one small read instead of the whole registry), whichever process changed it."""
        generation = self.index.generation()  # read first: a write racing the listing only causes a re-read
        cached = self._articles
        if cached is None or cached[0] != generation:
            cached = self._articles = (generation, self.index.list_articles())
        return cached[1]

    async def _title(self, article_id: str) -> str | None:
        rows = await asyncio.to_thread(self.article_list)
        return next((r["title"] for r in rows if article_id in (r["id"], r["url"])), None)

    async def cmd_add(self, update: Update, context: Context) -> None:
        if not self._is_admin(update):
            return await self.reply(update, context, render.ONLY_ADMINS)
        url = context.args[0] if context.args else ""
        if not re.match(r"^https?://\S+$", url, re.IGNORECASE):
            return await self.reply(update, context, render.ADD_USAGE)
        async with typing(context.bot, update.effective_chat.id):
            report = await asyncio.to_thread(self.index.index, [url])
            shown = strip_userinfo(url)  # a password in the URL is never echoed to the chat
            title = await self._title(shown) or shown
        await self.reply(update, context, render.index_summary(report, title))

    async def cmd_reindex(self, update: Update, context: Context) -> None:
        if not self._is_admin(update):
            return await self.reply(update, context, render.ONLY_ADMINS)
        folder = self.settings.articles_dir
        if folder is None:
            return await self.reply(update, context, render.NO_FOLDER)
        async with typing(context.bot, update.effective_chat.id):
            report = await asyncio.to_thread(self.index.index, [str(folder)], prune=True)
        await self.reply(update, context, render.reindex_summary(report, folder))

    async def on_document(self, update: Update, context: Context) -> None:
        """An admin's article file: downloaded to a temp folder under a safe name, then indexed."""
        if not self._addressed(update.message, context.bot)[0]:
            return
        if not self._is_admin(update):
            return await self.reply(update, context, render.ONLY_ADMINS)
        doc = update.message.document
        name = safe_filename(doc.file_name)
        if Path(name).suffix not in EXTENSIONS:
            types = " ".join(sorted(EXTENSIONS))
            return await self.reply(update, context, render.FILE_TYPES.format(types=types))
        cap = int(self.settings.upload_max_mb * 1048576)
        too_big = render.FILE_TOO_BIG.format(mb=self.settings.upload_max_mb)
        if doc.file_size and doc.file_size > cap:
            return await self.reply(update, context, too_big)
        async with typing(context.bot, update.effective_chat.id):
            with tempfile.TemporaryDirectory(prefix="newsdesk-upload-") as tmp:
                path = Path(tmp) / name
                file = await _retry(lambda: context.bot.get_file(doc.file_id))
                await file.download_to_drive(path)
                if path.stat().st_size > cap:
                    return await self.reply(update, context, too_big)
                report = await asyncio.to_thread(self.index.index, [str(path)])
            title = await self._title(path.stem) or doc.file_name or name
        await self.reply(update, context, render.index_summary(report, title))

    # errors

    async def on_error(self, update: object, context: Context) -> None:
        """The one error handler: our own errors get a line saying what kind of problem it is (the message
        itself, which may name a server path or address, only goes to the log), anything else is logged and
        apologised for. A failed long poll (no update: the network, Telegram's side) is one line in the log,
        not a traceback on every retry."""
        error = context.error
        if update is None and isinstance(error, TelegramError):
            kind = "network error" if isinstance(error, NetworkError) else type(error).__name__
            log.warning("polling Telegram for updates failed (%s: %s); retrying", kind, error)
            return
        if isinstance(error, NewsdeskError):
            log.warning("could not handle an update: %s", error)
            text = render.error_text(error)
        else:
            log.error("unexpected error while handling an update", exc_info=error)
            text = render.APOLOGY
        if isinstance(update, Update) and update.effective_chat is not None:
            with contextlib.suppress(TelegramError):
                await self.send(context.bot, update.effective_chat.id, text)


# -- building and running ----------------------------------------------------------------------------------

def build_application(settings: Settings, engine: Engine) -> Application:
    if not settings.telegram_bot_token:
        raise _missing_token()
    _protect_logs(settings.telegram_bot_token)
    bot = NewsdeskBot(settings, engine)
    builder = (ApplicationBuilder().token(settings.telegram_bot_token).concurrent_updates(True)
               .post_init(bot.post_init).post_shutdown(bot.post_shutdown))
    if settings.telegram_api_base_url:
        builder = builder.base_url(settings.telegram_api_base_url)
        if file_url := _file_base_url(settings.telegram_api_base_url):
            builder = builder.base_file_url(file_url)
    app = builder.build()
    app.bot_data["newsdesk"] = bot
    app.add_handler(TypeHandler(Update, bot.guard), group=-1)
    commands = {"start": bot.cmd_help, "help": bot.cmd_help, "ask": bot.cmd_ask, "new": bot.cmd_new,
                "sources": bot.cmd_sources, "stats": bot.cmd_stats, "add": bot.cmd_add,
                "reindex": bot.cmd_reindex}
    for name, callback in commands.items():
        app.add_handler(CommandHandler(name, callback, filters=NEW_MESSAGE))
    app.add_handler(CallbackQueryHandler(bot.on_source_button, pattern=r"^src:"))
    app.add_handler(MessageHandler(NEW_MESSAGE & filters.Document.ALL, bot.on_document))
    app.add_handler(MessageHandler(NEW_MESSAGE & filters.TEXT & ~filters.COMMAND, bot.on_text))
    app.add_handler(MessageHandler(NEW_MESSAGE & filters.COMMAND, bot.on_unknown_command))
    app.add_handler(MessageHandler(NEW_MESSAGE & ~filters.TEXT & ~filters.StatusUpdate.ALL, bot.on_other))
    app.add_error_handler(bot.on_error)
    return app


def run_bot(settings: Settings, webhook_url: str | None = None, webhook_port: int | None = None,
            webhook_secret: str | None = None) -> int:
    """``newsdesk bot``: long polling, or a webhook when a URL is given. Returns on SIGINT/SIGTERM. Logging is
    configured by the command's start-up (``newsdesk.bot.startup``), as for every command."""
    if not settings.telegram_bot_token:
        raise _missing_token()
    webhook_url = webhook_url or settings.telegram_webhook_url
    app = build_application(settings, Engine(settings))
    try:
        if webhook_url:
            app.run_webhook(listen="0.0.0.0", port=webhook_port or settings.telegram_webhook_port,
                            url_path=urlparse(webhook_url).path.lstrip("/"), webhook_url=webhook_url,
                            secret_token=webhook_secret or settings.telegram_webhook_secret,
                            allowed_updates=ALLOWED_UPDATES)
        else:
            app.run_polling(allowed_updates=ALLOWED_UPDATES)
    except InvalidToken:
        raise ConfigError("Telegram rejected TELEGRAM_BOT_TOKEN: check it with @BotFather") from None
    except TelegramError as exc:
        log.error("could not start the bot: %s", exc.__class__.__name__)
        raise ConfigError("could not reach the Telegram Bot API: check the network and "
                          "TELEGRAM_API_BASE_URL") from None
    return 0
