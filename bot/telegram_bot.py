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
import html
import logging
import math
import re
import tempfile
import threading
import time
import warnings
from collections import OrderedDict, deque
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlparse

from telegram import (
    BotCommand,
    BotCommandScopeChat,
    BotCommandScopeChatMember,
    BotCommandScopeDefault,
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
from telegram.error import BadRequest, InvalidToken, NetworkError, RetryAfter, TelegramError
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
from newsdesk.index.feeds import FeedList, poll as poll_feed_list, summary as feed_summary
from newsdesk.index.fetch import strip_userinfo
from newsdesk.index.loaders import EXTENSIONS
from newsdesk.index.settings import Settings

from . import telegram_render as render
from .conversation import Conversations
from .feedback import record_vote
from .engine import Engine
from .i18n import FALLBACK, interface_language, interface_languages, t
from .startup import quiet_http_loggers

log = logging.getLogger(__name__)

TYPING_EVERY = 4.0  # seconds; Telegram shows "typing…" for about 5 s
FILL_EVERY = 30.0  # seconds between checks for passages still missing accurate vectors
FILL_BATCH = 4  # passages per e5 call in the background: a question waits for at most one such call
FILL_PAUSE = 0.5  # seconds between the background fill's rounds of 32 passages (another writer may be waiting)
MAX_RETRY_WAIT = 60.0  # flood control: longer waits are not worth holding a handler for
ALLOWED_UPDATES = [Update.MESSAGE, Update.EDITED_MESSAGE, Update.CALLBACK_QUERY]
NEW_MESSAGE = filters.UpdateType.MESSAGE  # not edits, not channel posts
EDITED_MESSAGE = filters.UpdateType.EDITED_MESSAGE  # a user changed a message's text
REPLIES_KEPT = 2000  # questions whose replies are remembered (chat, message id) for an edit of the question
BUTTONS_PER_ROW = 2  # source buttons, labelled "[1] Outlet · 28 Sep"
_SAFE_NAME = re.compile(r"[^\w.-]+")
_SOURCE_BUTTON = re.compile(r"^src:([\w-]{1,16}):(\d{1,3})$")
_VOTE_BUTTON = re.compile(r"^v:([\w-]{1,16}):([+-])$")


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


# -- streaming written answers (LLM mode) ----------------------------------------------------------------

DRAFT_EVERY = 0.5  # seconds between drafts of an answer being written, in a private chat
EDIT_EVERY = 1.5  # seconds between edits of the progress message in a group (Telegram: ~20 messages/min there)
DRAFT_REFRESH = 20.0  # a draft shows for about 30 s: sent again when the text has not changed for this long
PROGRESS_CHARS = 3000  # a longer text in progress is shown cut to its first this many characters


async def _pause(event: asyncio.Event, seconds: float | None) -> None:
    """Sleep ``seconds`` (None: as long as it takes), or less if ``event`` is set."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()


class StreamingReply:
    """An answer shown while the model writes it, then replaced by the verified answer.

    :meth:`update` is the engine's ``on_progress``: it only records the text, never waits for Telegram, and a
    task shows it: in a private chat as drafts (``sendMessageDraft``, at most every ``DRAFT_EVERY`` s), in a
    group as one message (a reply to the question) edited at most every ``EDIT_EVERY`` s; flood control
    (RetryAfter) is waited out, then the latest text shown. :meth:`deliver` stops it and sends the final
    messages: a private chat gets them as usual (the draft is ephemeral); in a group the progress message is
    edited into the answer's first part (deleted when that fails), so nothing unverified stays on screen.
    :meth:`abandon` (no answer: an error) deletes it. A failed draft or edit costs the preview, never the answer."""

    def __init__(self, owner: NewsdeskBot, bot, message: Message, lang: str, enabled: bool = True) -> None:
        self.owner, self.bot, self.question, self.lang, self.enabled = owner, bot, message, lang, enabled
        self.chat_id, self.private = message.chat.id, message.chat.type == Chat.PRIVATE
        self.thread = message.message_thread_id if message.is_topic_message else None
        self.text, self.shown = "", ""
        self.message: Message | None = None  # the group's progress message, once sent
        self._changed, self._done = asyncio.Event(), asyncio.Event()
        self._task: asyncio.Task | None = None
        self._calm_at = 0.0  # (loop time) flood control asked for no call before this

    @property
    def ask_options(self) -> dict:
        """The keyword arguments of ``Engine.ask`` (none when not streaming: offline answers come whole)."""
        return {"on_progress": self.update} if self.enabled else {}

    async def update(self, text: str) -> None:
        self.text = text
        self._changed.set()
        if self._task is None:
            self._task = asyncio.create_task(self._show_progress(), name=f"newsdesk-stream-{self.chat_id}")

    def _html(self, text: str) -> str:
        if len(text) > PROGRESS_CHARS:
            text = text[:PROGRESS_CHARS].rsplit(" ", 1)[0] + " …"
        return f"{html.escape(text)}\n\n<i>{html.escape(t('stream.writing', self.lang))}</i>"

    async def _show_progress(self) -> None:
        every = DRAFT_EVERY if self.private else EDIT_EVERY
        while not self._done.is_set():
            await _pause(self._changed, DRAFT_REFRESH if self.private else None)
            if self._done.is_set():
                return
            self._changed.clear()
            text = self.text
            if text and (text != self.shown or self.private):
                wait = await self._show(text)
                if wait is None:
                    return
                await _pause(self._done, max(every, wait))

    async def _show(self, text: str) -> float | None:
        """Show ``text``; the seconds flood control asks to wait before the next call (0 when none), None when
        Telegram refused it (progress is not shown again for this answer)."""
        try:
            if self.private:
                await self.bot.send_message_draft(self.chat_id, self.question.message_id, self._html(text),
                                                  message_thread_id=self.thread, parse_mode=ParseMode.HTML)
            elif self.message is None:
                self.message = await self.bot.send_message(
                    self.chat_id, self._html(text), parse_mode=ParseMode.HTML, message_thread_id=self.thread,
                    reply_parameters=ReplyParameters(self.question.message_id, allow_sending_without_reply=True),
                    link_preview_options=LinkPreviewOptions(is_disabled=True))
            else:
                await self.bot.edit_message_text(self._html(text), self.chat_id, self.message.message_id,
                                                 parse_mode=ParseMode.HTML,
                                                 link_preview_options=LinkPreviewOptions(is_disabled=True))
        except RetryAfter as exc:
            with warnings.catch_warnings():  # the int/timedelta deprecation of retry_after
                warnings.simplefilter("ignore")
                wait = _seconds(exc.retry_after)
            log.info("flood control while streaming: next update in %.0f s", wait)
            self._calm_at = asyncio.get_running_loop().time() + wait
            return wait
        except TelegramError as exc:
            # the network, a timeout, a proxy's 502: the next update may get through; a refusal (a Bot API
            # without drafts, no rights, a bad request) would be refused again: the answer comes when complete
            refused = isinstance(exc, BadRequest) or not isinstance(exc, NetworkError)
            log.info("could not show the answer being written (%s)", type(exc).__name__)
            return None if refused else 0.0
        self.shown = text
        return 0.0

    async def stop(self) -> None:
        """Stop showing progress; a call to Telegram under way is let finish (a progress message it sends is
        known, so it can be replaced)."""
        self._done.set()
        self._changed.set()  # wakes the task where it waits for a change
        if self._task is not None:
            await self._task

    async def abandon(self) -> None:
        """No answer after all (an error): stop, and remove the progress message."""
        await self.stop()
        progress, self.message = self.message, None
        if progress is not None:
            await self._delete(progress)

    async def _delete(self, progress: Message) -> None:
        """Delete the progress message (a failure leaves it: nothing better can be done)."""
        with contextlib.suppress(TelegramError):
            await _retry(lambda: self.bot.delete_message(self.chat_id, progress.message_id))

    async def deliver(self, texts: list[str], markup=None) -> list[Message]:
        """The final answer, replacing what was shown while it was written: the progress message (a group's)
        becomes its first part (the others follow as replies to it), or is deleted when it cannot be edited.
        Returns the messages that show the answer."""
        await self.stop()
        progress, self.message = self.message, None
        if progress is not None:
            calm = self._calm_at - asyncio.get_running_loop().time()
            if calm > 0:  # flood control is still on: an edit now would be refused again
                await asyncio.sleep(calm)
            first = markup if len(texts) == 1 else None
            try:
                edited = await _retry(lambda: self.bot.edit_message_text(
                    texts[0], self.chat_id, progress.message_id, parse_mode=ParseMode.HTML, reply_markup=first,
                    link_preview_options=LinkPreviewOptions(is_disabled=True)))
            except TelegramError as exc:
                log.info("could not edit the progress message into the answer (%s)", type(exc).__name__)
                await self._delete(progress)
            else:
                shown = [edited if isinstance(edited, Message) else progress]
                if len(texts) > 1:
                    reply_to = edited if isinstance(edited, Message) else self.question
                    shown += await self.owner.send(self.bot, self.chat_id, texts[1:], reply_to=reply_to,
                                                   markup=markup)
                return shown
        return await self.owner.send(self.bot, self.chat_id, texts, reply_to=self.question, markup=markup)


# -- the bot ---------------------------------------------------------------------------------------------

Context = ContextTypes.DEFAULT_TYPE


class NewsdeskBot:
    """The handlers, with the engine, the settings and the rate limiter they share."""

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings, self.engine, self.index = settings, engine, engine.index
        self.limiter = RateLimiter(settings.rate_limit_per_minute)
        self.conversations = Conversations.from_settings(settings, scope="telegram")
        self._stopping = threading.Event()
        self._fill_task: asyncio.Task | None = None
        self._polling_feeds = False  # a feed poll job is running (the next one skips)
        self._articles: tuple[str, list[dict]] | None = None  # (store generation, the article list then)
        # (chat id, question's message id) -> the ids of the bot's reply messages, for an edit of the question
        self._replies: OrderedDict[tuple[int, int], list[int]] = OrderedDict()
        self._passages_shown: OrderedDict[tuple[int, str, int], int] = OrderedDict()  # source button -> message
        self._member_scopes: set[tuple[int, int]] = set()  # (group, admin) whose admin commands are set

    # sending

    async def send(self, bot, chat_id: int, texts: list[str] | str, *, reply_to: Message | None = None,
                   markup=None) -> list[Message]:
        """Send HTML message(s); the first replies to ``reply_to``, the last carries ``markup``. Returns the
        messages sent."""
        texts = [texts] if isinstance(texts, str) else texts
        thread = reply_to.message_thread_id if reply_to is not None and reply_to.is_topic_message else None
        sent = []
        for i, text in enumerate(texts):
            quote = None
            if reply_to is not None and i == 0:
                quote = ReplyParameters(reply_to.message_id, allow_sending_without_reply=True)
            options = {"parse_mode": ParseMode.HTML, "message_thread_id": thread, "reply_parameters": quote,
                       "link_preview_options": LinkPreviewOptions(is_disabled=True),
                       "reply_markup": markup if i == len(texts) - 1 else None}
            sent.append(await _retry(lambda text=text, options=options: bot.send_message(chat_id, text, **options)))
        return sent

    async def reply(self, update: Update, context: Context, texts: list[str] | str) -> list[Message]:
        return await self.send(context.bot, update.effective_chat.id, texts, reply_to=update.effective_message)

    async def replace(self, bot, chat_id: int, old: list[int], texts: list[str], *, reply_to: Message,
                      markup=None) -> list[int]:
        """Show ``texts`` in place of the bot's earlier messages ``old`` (an edited question's reply): each of
        them edited in turn, further texts sent, old messages left over deleted. A message that cannot be
        edited (deleted meanwhile) is replaced by a new one. Returns the ids of the messages now shown."""
        shown: list[int] = []
        for i, text in enumerate(texts):
            keys = markup if i == len(texts) - 1 else None
            if i < len(old):
                try:
                    await _retry(lambda text=text, keys=keys, mid=old[i]: bot.edit_message_text(
                        text, chat_id, mid, parse_mode=ParseMode.HTML, reply_markup=keys,
                        link_preview_options=LinkPreviewOptions(is_disabled=True)))
                    shown.append(old[i])
                    continue
                except BadRequest as exc:
                    if "not modified" in exc.message.lower():  # the same answer again: it stays as it is
                        shown.append(old[i])
                        continue
                    log.info("could not edit an earlier reply (%s); sending a new one", type(exc).__name__)
            sent = await self.send(bot, chat_id, [text], reply_to=reply_to, markup=keys)
            shown += [m.message_id for m in sent]
        for mid in old[len(texts):]:
            with contextlib.suppress(TelegramError):
                await _retry(lambda mid=mid: bot.delete_message(chat_id, mid))
        return shown

    def remember_replies(self, chat_id: int, question_id: int, messages: list[int]) -> None:
        """Which messages answer a question, for an edit of it (the latest ``REPLIES_KEPT`` questions)."""
        self._replies[(chat_id, question_id)] = messages
        self._replies.move_to_end((chat_id, question_id))
        while len(self._replies) > REPLIES_KEPT:
            self._replies.popitem(last=False)

    def lang(self, update: Update, text: str = "") -> str:
        """The language to talk to this update's user in: their client's, else that of ``text``."""
        user = update.effective_user
        return interface_language(user.language_code if user else None, text)

    # lifecycle

    async def post_init(self, app: Application) -> None:
        await self.set_command_menus(app.bot)
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
        await asyncio.to_thread(self.conversations.close)

    async def set_command_menus(self, bot) -> None:
        """The command menus: users' commands for everyone (the default scope), admins' as well in each
        configured admin's private chat (``BotCommandScopeChat``); in every interface language (a client in
        another language gets English)."""
        for lang in sorted(interface_languages()):
            code = None if lang == FALLBACK else lang
            await self._set_commands(bot, BotCommandScopeDefault(), lang, code)
            for admin in sorted(self.settings.telegram_admin_ids):
                await self._set_commands(bot, BotCommandScopeChat(admin), lang, code, admin=True)

    async def _set_commands(self, bot, scope, lang: str, code: str | None, admin: bool = False) -> None:
        commands = [BotCommand(name, text) for name, text in render.commands(lang, admin)]
        await _retry(lambda: bot.set_my_commands(commands, scope=scope, language_code=code))

    async def admin_in_group(self, update: Update, bot) -> None:
        """An admin writing in a group gets the admin commands in that group's menu too (once per group and
        admin: ``BotCommandScopeChatMember``). A failure costs the menu only."""
        chat, user = update.effective_chat, update.effective_user
        if chat is None or chat.type == Chat.PRIVATE or not self._is_admin(update):
            return
        if (chat.id, user.id) in self._member_scopes or len(self._member_scopes) > 10_000:
            return
        self._member_scopes.add((chat.id, user.id))
        with contextlib.suppress(TelegramError):
            for lang in sorted(interface_languages()):
                await self._set_commands(bot, BotCommandScopeChatMember(chat.id, user.id), lang,
                                         None if lang == FALLBACK else lang, admin=True)

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
            if update.message is not None and update.effective_chat.type != Chat.PRIVATE and self._is_admin(update):
                context.application.create_task(self.admin_in_group(update, context.bot), update=update)
            return
        text = render.reply("tg.private", self.lang(update))
        if update.callback_query:
            await _retry(lambda: update.callback_query.answer(render.plain(text)))
        elif update.message and (self._addressed(update.message, context.bot)[0]
                                 or (update.message.text or "").startswith("/")):
            await self.reply(update, context, text)
        raise ApplicationHandlerStop

    async def _slowed(self, update: Update, context: Context, lang: str = FALLBACK) -> bool:
        """Count a request that costs the server work (a question, /sources, /stats) against the sender's rate
        limit; when it is over the limit, say when to try again and return True."""
        who = update.effective_user or update.effective_chat
        if wait := self.limiter.wait(who.id):
            await self.reply(update, context, render.reply("tg.slow_down", lang, seconds=math.ceil(wait)))
            return True
        return False

    def _is_admin(self, update: Update) -> bool:
        user = update.effective_user
        return user is not None and user.id in self.settings.telegram_admin_ids

    # questions

    async def answer(self, update: Update, context: Context, question: str) -> None:
        """Answer a question (new, or edited: then its earlier reply is edited into the new answer)."""
        question = question.strip()
        lang = self.lang(update, question)
        if not question:
            example = next(iter(await self.examples(lang)), "")
            return await self.reply(update, context, render.reply("tg.ask_something", lang, example=example))
        if len(question) > render.MAX_QUESTION_CHARS:
            return await self.reply(update, context, render.reply("tg.too_long", lang, n=f"{len(question):,}",
                                                                  limit=f"{render.MAX_QUESTION_CHARS:,}"))
        if await self._slowed(update, context, lang):
            return
        chat_id, message = update.effective_chat.id, update.effective_message
        earlier = self._replies.get((chat_id, message.message_id)) if update.edited_message else None
        history = await asyncio.to_thread(self.conversations.history, chat_id)
        if earlier:  # an edited question: answered whole, then shown in place of the earlier reply
            async with typing(context.bot, chat_id):
                answer = await self.engine.ask(question, history)
        else:
            async with typing(context.bot, chat_id), self._answer_streaming(update, context, question) as stream:
                answer = await self.engine.ask(question, history, **stream.ask_options)
        key = await asyncio.to_thread(self.conversations.remember, chat_id, question, answer)
        texts, markup = render.answer_messages(answer, lang), self.answer_markup(answer, key, lang)
        if earlier:
            shown = await self.replace(context.bot, chat_id, earlier, texts, reply_to=message, markup=markup)
        else:
            sent = await stream.deliver(texts, markup=markup)  # replaces what was streamed
            shown = [m.message_id for m in sent or () if isinstance(m, Message)]
        if shown:
            self.remember_replies(chat_id, message.message_id, shown)

    @staticmethod
    def answer_markup(answer, key: str, lang: str) -> InlineKeyboardMarkup:
        """An answer's buttons: one per source ("[1] Sputnik · 28 Sep", shows its passage), then 👍 / 👎."""
        buttons = [InlineKeyboardButton(render.source_label(c, lang), callback_data=f"src:{key}:{c.n}")
                   for c in answer.citations]
        rows = [buttons[i:i + BUTTONS_PER_ROW] for i in range(0, len(buttons), BUTTONS_PER_ROW)]
        rows.append([InlineKeyboardButton("👍", callback_data=f"v:{key}:+"),
                     InlineKeyboardButton("👎", callback_data=f"v:{key}:-")])
        return InlineKeyboardMarkup(rows)

    async def on_edited(self, update: Update, context: Context) -> None:
        """An edited message: a question meant for the bot is answered again (its reply replaced where the bot
        still knows it); an edited command or a message not meant for the bot is ignored."""
        message = update.edited_message
        text = message.text or ""
        if text.startswith("/ask"):
            parts = text.split(maxsplit=1)
            return await self.answer(update, context, parts[1] if len(parts) > 1 else "")
        if text.startswith("/"):
            return
        addressed, text = self._addressed(message, context.bot)
        if addressed:
            await self.answer(update, context, text)

    @contextlib.asynccontextmanager
    async def _answer_streaming(self, update: Update, context: Context, question: str):
        """The :class:`StreamingReply` of a question: in LLM mode it shows the answer as it is written (its
        ``ask_options`` give the engine its ``on_progress``); offline it only sends the answer. Progress stops
        when the block ends; when it ends with an error, a progress message shown is deleted."""
        user = update.effective_user
        lang = interface_language(user.language_code if user else None, question)
        stream = StreamingReply(self, context.bot, update.effective_message, lang, self.engine.mode == "llm")
        try:
            yield stream
        except BaseException:
            await stream.abandon()
            raise
        await stream.stop()

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
            await self.reply(update, context, render.reply("tg.only_text", self.lang(update)))

    async def on_unknown_command(self, update: Update, context: Context) -> None:
        if update.effective_chat.type == Chat.PRIVATE:
            await self.reply(update, context, render.reply("tg.unknown_command", self.lang(update)))

    async def on_source_button(self, update: Update, context: Context) -> None:
        """A source button: its whole passage, sent once as a reply to the answer; tapped again, a note that it
        is shown above."""
        query, lang = update.callback_query, self.lang(update)
        match = _SOURCE_BUTTON.match(query.data or "")
        chat = update.effective_chat
        citation = None
        if match and chat is not None:
            citation = await asyncio.to_thread(self.conversations.citation, chat.id, match.group(1),
                                               int(match.group(2)))
        if citation is None:
            return await _retry(lambda: query.answer(t("tg.expired", lang), show_alert=True))
        shown_key = (chat.id, match.group(1), citation.n)
        if shown_key in self._passages_shown:
            return await _retry(lambda: query.answer(t("tg.passage_shown", lang)))
        self._passages_shown[shown_key] = query.message.message_id if query.message else 0
        while len(self._passages_shown) > REPLIES_KEPT:
            self._passages_shown.popitem(last=False)
        await _retry(lambda: query.answer())
        await self.send(context.bot, chat.id, render.passage_messages(citation, lang),
                        reply_to=query.message if isinstance(query.message, Message) else None)

    async def on_vote(self, update: Update, context: Context) -> None:
        """👍 / 👎 under an answer: recorded with the answer's details (``bot.feedback``), confirmed briefly."""
        query, lang = update.callback_query, self.lang(update)
        match = _VOTE_BUTTON.match(query.data or "")
        chat, user = update.effective_chat, update.effective_user
        recorded = None
        if match and chat is not None:
            recorded = await asyncio.to_thread(self._vote, chat.id, match.group(1), match.group(2),
                                               user.id if user else None)
        if recorded is None:
            return await _retry(lambda: query.answer(t("tg.expired", lang), show_alert=True))
        await _retry(lambda: query.answer(t("tg.vote_up" if match.group(2) == "+" else "tg.vote_down", lang)))

    def _vote(self, chat_id: int, answer_key: str, vote: str, user_id: int | None) -> dict | None:
        """Record a vote (blocking: the conversation store and the feedback file); None when the answer is no
        longer known."""
        answer = self.conversations.answer(chat_id, answer_key)
        if answer is None:
            return None
        return record_vote(self.settings.feedback_path, answer_key, answer, vote, chat=chat_id, user=user_id)

    # commands

    async def examples(self, lang: str) -> list[str]:
        """Example questions about the indexed articles, in ``lang``."""
        rows = await asyncio.to_thread(self.article_list)
        return render.example_questions(rows, lang)

    async def cmd_start(self, update: Update, context: Context) -> None:
        """The greeting, with three example questions drawn from the indexed articles."""
        rows = await asyncio.to_thread(self.article_list)
        user = update.effective_user
        name = user.first_name if user and update.effective_chat.type == Chat.PRIVATE else ""
        await self.reply(update, context, render.start_text(rows, self.lang(update), name or ""))

    async def cmd_help(self, update: Update, context: Context) -> None:
        await self.reply(update, context, render.help_text(self.settings, self.lang(update), self._is_admin(update)))

    async def cmd_new(self, update: Update, context: Context) -> None:
        await asyncio.to_thread(self.conversations.reset, update.effective_chat.id)
        await self.reply(update, context, render.reply("tg.new_conversation", self.lang(update)))

    async def cmd_sources(self, update: Update, context: Context) -> None:
        lang = self.lang(update)
        if await self._slowed(update, context, lang):
            return
        rows = await asyncio.to_thread(self.article_list)
        await self.reply(update, context, render.sources_messages(rows, lang))

    async def cmd_stats(self, update: Update, context: Context) -> None:
        lang = self.lang(update)
        if await self._slowed(update, context, lang):
            return
        stats = await asyncio.to_thread(self.index.stats)  # counts only: cheap, and always current
        await self.reply(update, context, render.stats_text(stats, lang))

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
        lang = self.lang(update)
        if not self._is_admin(update):
            return await self.reply(update, context, render.reply("tg.only_admins", lang))
        url = context.args[0] if context.args else ""
        if not re.match(r"^https?://\S+$", url, re.IGNORECASE):
            return await self.reply(update, context, render.reply("tg.add_usage", lang))
        async with typing(context.bot, update.effective_chat.id):
            report = await asyncio.to_thread(self.index.index, [url])
            shown = strip_userinfo(url)  # a password in the URL is never echoed to the chat
            title = await self._title(shown) or shown
        await self.reply(update, context, render.index_summary(report, title, lang))

    async def cmd_reindex(self, update: Update, context: Context) -> None:
        lang = self.lang(update)
        if not self._is_admin(update):
            return await self.reply(update, context, render.reply("tg.only_admins", lang))
        folder = self.settings.articles_dir
        if folder is None:
            return await self.reply(update, context, render.reply("tg.no_folder", lang))
        async with typing(context.bot, update.effective_chat.id):
            report = await asyncio.to_thread(self.index.index, [str(folder)], prune=True)
        await self.reply(update, context, render.reindex_summary(report, folder, lang))

    # feeds (index.feeds): the list `newsdesk watch` polls too, polled here by the job queue

    async def cmd_feeds(self, update: Update, context: Context) -> None:
        """Admins: ``/feeds`` lists the feeds, ``/feeds add URL`` and ``/feeds remove URL`` change the list (an
        added feed is polled at once)."""
        lang = self.lang(update)
        if not self._is_admin(update):
            return await self.reply(update, context, t("tg.only_admins", lang))
        action, url = (context.args + ["", ""])[:2] if context.args else ("list", "")
        shown = html.escape(strip_userinfo(url))
        feed_list = FeedList(self.settings.home)
        if action == "list" and not url:
            rows = await asyncio.to_thread(feed_summary, self.settings.home)
            return await self.reply(update, context, _feeds_text(rows, self.settings.feed_interval, lang))
        if action not in ("add", "remove") or not re.match(r"^https?://\S+$", url, re.IGNORECASE):
            return await self.reply(update, context, t("feeds.usage", lang))
        if action == "remove":
            done = await asyncio.to_thread(feed_list.remove, url)
            return await self.reply(update, context, t("feeds.removed" if done else "feeds.not_listed", lang,
                                                       url=shown))
        if strip_userinfo(url) != url:
            return await self.reply(update, context, t("feeds.password", lang))
        done = await asyncio.to_thread(feed_list.add, url)
        await self.reply(update, context, t("feeds.added" if done else "feeds.already", lang, url=shown))
        if done and context.job_queue is not None:
            context.job_queue.run_once(self.poll_feeds, 0, name="newsdesk-feeds-now")

    async def poll_feeds(self, context: Context) -> None:
        """A job (every ``NEWSDESK_FEED_INTERVAL`` s): every listed feed polled in a worker thread, its new and
        changed items indexed (stage 2 is left to the background fill); a poll still running skips this one."""
        if self._polling_feeds:
            return
        self._polling_feeds = True
        try:
            results = await asyncio.to_thread(poll_feed_list, self.index, accurate=False,
                                              should_stop=self._stopping.is_set)
        except NewsdeskError as exc:
            log.warning("feeds: %s", exc)
            return
        finally:
            self._polling_feeds = False
        for result in results:
            if result.report is not None and (result.report.added or result.report.updated):
                log.info("feed %s: %d added, %d updated", result.url, result.report.added, result.report.updated)

    async def on_document(self, update: Update, context: Context) -> None:
        """An admin's article file: downloaded to a temp folder under a safe name, then indexed."""
        if not self._addressed(update.message, context.bot)[0]:
            return
        lang = self.lang(update, update.message.caption or "")
        if not self._is_admin(update):
            return await self.reply(update, context, render.reply("tg.only_admins", lang))
        doc = update.message.document
        name = safe_filename(doc.file_name)
        if Path(name).suffix not in EXTENSIONS:
            types = " ".join(sorted(EXTENSIONS))
            return await self.reply(update, context, render.reply("tg.file_types", lang, types=types))
        cap = int(self.settings.upload_max_mb * 1048576)
        too_big = render.reply("tg.file_too_big", lang, mb=f"{self.settings.upload_max_mb:g}")
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
        await self.reply(update, context, render.index_summary(report, title, lang))

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
        lang = self.lang(update) if isinstance(update, Update) else FALLBACK
        if isinstance(error, NewsdeskError):
            log.warning("could not handle an update: %s", error)
            text = render.error_text(error, lang)
        else:
            log.error("unexpected error while handling an update", exc_info=error)
            text = render.reply("tg.apology", lang)
        if isinstance(update, Update) and update.effective_chat is not None:
            with contextlib.suppress(TelegramError):
                await self.send(context.bot, update.effective_chat.id, text)


# -- building and running ----------------------------------------------------------------------------------

def _feeds_text(rows: list[dict], interval: float, lang: str) -> str:
    """``/feeds``: each listed feed, its title and items, or its failure (Telegram HTML)."""
    if not rows:
        return t("feeds.none", lang)
    lines = [t("feeds.header", lang, seconds=f"{interval:g}")]
    for row in rows:
        url, title = html.escape(row["url"]), html.escape(row["title"] or "")
        if row["failures"]:
            lines.append(t("feeds.row_failing", lang, url=url, error=html.escape(row["last_error"] or ""),
                           failures=row["failures"]))
        else:
            lines.append(t("feeds.row", lang, url=url, title=title, items=row["items"]))
    return "\n".join(lines)


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
    commands = {"start": bot.cmd_start, "help": bot.cmd_help, "ask": bot.cmd_ask, "new": bot.cmd_new,
                "sources": bot.cmd_sources, "stats": bot.cmd_stats, "add": bot.cmd_add,
                "reindex": bot.cmd_reindex}
    commands["feeds"] = bot.cmd_feeds
    for name, callback in commands.items():
        app.add_handler(CommandHandler(name, callback, filters=NEW_MESSAGE))
    if settings.feed_interval > 0 and app.job_queue is not None:  # the feed list, polled in the background
        logging.getLogger("apscheduler").setLevel(logging.WARNING)  # not two INFO lines per poll
        app.job_queue.run_repeating(bot.poll_feeds, interval=settings.feed_interval, first=1.0,
                                    name="newsdesk-feeds")
    elif settings.feed_interval > 0:
        log.warning("feeds are not polled: python-telegram-bot's job queue needs APScheduler (pip install -e .)")
    app.add_handler(CallbackQueryHandler(bot.on_source_button, pattern=r"^src:"))
    app.add_handler(CallbackQueryHandler(bot.on_vote, pattern=r"^v:"))
    app.add_handler(MessageHandler(EDITED_MESSAGE & filters.TEXT, bot.on_edited))
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
