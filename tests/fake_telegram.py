"""A fake Telegram Bot API server on 127.0.0.1, for running the real python-telegram-bot client against.

    with FakeTelegram() as tg:
        settings = replace(settings, telegram_bot_token=tg.token, telegram_api_base_url=tg.base_url)
        ... start the bot ...
        tg.message(chat_id=1, text="What weapons did each side allege?")
        replies = tg.wait_messages(chat_id=1, count=1)

It implements the methods the bot calls (getMe, setMyCommands and deleteMyCommands with scopes and languages,
deleteWebhook, getUpdates as a real long poll, setWebhook, sendMessage, editMessageText (the message keeps its
id; ``shown`` is what a chat shows now), editMessageReplyMarkup, deleteMessage, sendMessageDraft (``drafts``),
setMessageReaction, sendChatAction, answerCallbackQuery, getFile) and file downloads
(``/file/bot<token>/<path>``). The test side sends messages, edited messages (``edit``) and callback queries
(``callback``, from a user with a ``language_code`` when one is set in ``languages``). Every call is recorded in
``calls`` with its decoded parameters; anything else answers 404 and is recorded in ``unknown``.
``flood(method, retry_after)`` makes the next call of a method fail with 429 and ``retry_after``, like
Telegram's flood control; ``fail(method, times, status)`` makes the next ``times`` calls fail with HTTP
``status`` (a proxy in between or Telegram itself having trouble).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qsl, unquote

BOT_ID = 7000001
BOT_USERNAME = "newsdesk_test_bot"
TOKEN = "7000001:AAH-fake-Token_for-tests-0123456789"
TRUE_METHODS = {"setMyCommands", "deleteMyCommands", "deleteWebhook", "setWebhook", "sendChatAction",
                "answerCallbackQuery", "sendMessageDraft", "setMessageReaction"}
JSON_FIELDS = {"reply_markup", "reply_parameters", "link_preview_options", "commands", "allowed_updates",
               "entities", "scope"}


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    at: float = field(default_factory=time.monotonic)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # like a real server: 50 chats answered at once open many connections at once


class FakeTelegram:
    def __init__(self, token: str = TOKEN) -> None:
        self.token = token
        self.calls: list[Call] = []
        self.unknown: list[str] = []
        self.files: dict[str, tuple[str, bytes]] = {}  # file_id -> (file_path, content)
        self._updates: list[dict] = []
        self._chats: dict[int, dict] = {}
        self._shown: dict[tuple[int, int], dict] = {}  # (chat id, message id) -> the bot's message as shown now
        self.languages: dict[int, str] = {}  # user id -> the language_code their client sends
        self._floods: dict[str, list[int]] = {}
        self._failures: dict[str, list[int]] = {}
        self._next_update = 1
        self._next_message = 1
        self._cond = threading.Condition()
        self._closing = False
        self._server = _Server(("127.0.0.1", 0), _handler(self))
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    # -- lifecycle

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/bot"

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- what the test sends

    def _message_id(self) -> int:
        with self._cond:
            self._next_message += 1
            return self._next_message

    def _push(self, kind: str, payload: dict) -> dict:
        with self._cond:
            update = {"update_id": self._next_update, kind: payload}
            self._next_update += 1
            self._updates.append(update)
            self._cond.notify_all()
        return update

    def chat(self, chat_id: int, kind: str = "private") -> dict:
        chat = self._chats.setdefault(chat_id, {"id": chat_id, "type": kind})
        if kind != "private":
            chat.setdefault("title", f"group {chat_id}")
        return chat

    def user(self, user_id: int) -> dict:
        """A user; with the ``language_code`` set for them in ``languages`` (as a Telegram client sends it)."""
        user = {"id": user_id, "is_bot": False, "first_name": f"user{user_id}"}
        if user_id in self.languages:
            user["language_code"] = self.languages[user_id]
        return user

    def edit(self, message: dict, text: str) -> dict:
        """Queue an ``edited_message`` update: the user changed the text of ``message`` (same id)."""
        edited = {**message, "text": text, "edit_date": int(time.time())}
        edited.pop("entities", None)
        if text.startswith("/"):
            edited["entities"] = [{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}]
        self._push("edited_message", edited)
        return edited

    def message(self, chat_id: int, text: str | None = None, *, user_id: int | None = None,
                chat_type: str | None = None, reply_to: dict | None = None, mention: bool = False,
                **content) -> dict:
        """Queue a message from a user (``user_id`` defaults to the chat id, as in a private chat) and return
        it. ``mention`` prefixes the text with @BOT_USERNAME (and its entity); ``content`` adds fields, e.g.
        a sticker."""
        kind = chat_type or ("private" if chat_id > 0 else "supergroup")
        msg: dict[str, Any] = {"message_id": self._message_id(), "date": int(time.time()), **content,
                               "chat": self.chat(chat_id, kind), "from": self.user(user_id or chat_id)}
        if text is not None:
            entities = []
            if mention:
                text = f"@{BOT_USERNAME} {text}"
                entities.append({"type": "mention", "offset": 0, "length": len(BOT_USERNAME) + 1})
            if text.startswith("/"):
                entities.append({"type": "bot_command", "offset": 0, "length": len(text.split()[0])})
            msg["text"] = text
            if entities:
                msg["entities"] = entities
        if reply_to is not None:
            msg["reply_to_message"] = reply_to
        self._push("message", msg)
        return msg

    def add_file(self, name: str, content: bytes) -> str:
        file_id = f"file{len(self.files) + 1}"
        ext = name.rsplit(".", 1)[-1] if "." in name else "bin"
        self.files[file_id] = (f"documents/{file_id}.{ext}", content)  # the server's name, like Telegram's
        return file_id

    def document(self, chat_id: int, name: str, content: bytes, *, user_id: int | None = None,
                 mime: str = "text/plain") -> dict:
        file_id = self.add_file(name, content)
        doc = {"file_id": file_id, "file_unique_id": f"u{file_id}", "file_name": name, "mime_type": mime,
               "file_size": len(content)}
        return self.message(chat_id, user_id=user_id, document=doc)

    def callback(self, chat_id: int, data: str, message: dict, *, user_id: int | None = None) -> dict:
        query = {"id": str(self._message_id()), "from": self.user(user_id or chat_id), "chat_instance": "ci",
                 "data": data, "message": message}
        return self._push("callback_query", query)["callback_query"]

    def flood(self, method: str, retry_after: int = 1) -> None:
        self._floods.setdefault(method, []).append(retry_after)

    def fail(self, method: str, times: int = 1, status: int = 502) -> None:
        """The next ``times`` calls of ``method`` answer HTTP ``status`` (recorded as ``method:failed``)."""
        self._failures.setdefault(method, []).extend([status] * times)

    # -- what the bot sent

    def calls_of(self, method: str, chat_id: int | None = None) -> list[Call]:
        return [c for c in list(self.calls) if c.method == method
                and (chat_id is None or str(c.params.get("chat_id")) == str(chat_id))]

    def messages(self, chat_id: int | None = None) -> list[dict]:
        """The messages the bot sent (sendMessage parameters plus the ``message`` it got back)."""
        return [c.params for c in self.calls_of("sendMessage", chat_id)]

    def edits(self, chat_id: int | None = None) -> list[dict]:
        """The bot's edits of its messages (editMessageText parameters plus the ``message`` as edited)."""
        return [c.params for c in self.calls_of("editMessageText", chat_id)]

    def drafts(self, chat_id: int | None = None) -> list[dict]:
        """The drafts the bot streamed (sendMessageDraft parameters)."""
        return [c.params for c in self.calls_of("sendMessageDraft", chat_id)]

    def shown(self, chat_id: int) -> list[dict]:
        """The bot's messages in a chat as the user sees them now (edits applied), oldest first: each a Message
        dict (``message_id``, ``text``, ``reply_markup``)."""
        with self._cond:
            return [m for (chat, _), m in sorted(self._shown.items()) if chat == chat_id]

    def commands(self, scope_type: str = "default", chat_id: int | None = None, user_id: int | None = None,
                 language_code: str = "") -> list[str] | None:
        """The command names the last setMyCommands for this scope and language set (None: never set, or
        deleted since)."""
        found = None
        for call in self.calls:
            if call.method not in {"setMyCommands", "deleteMyCommands"}:
                continue
            scope = call.params.get("scope") or {"type": "default"}
            if (scope.get("type") == scope_type and str(scope.get("chat_id")) == str(chat_id)
                    and str(scope.get("user_id")) == str(user_id)
                    and (call.params.get("language_code") or "") == language_code):
                found = ([c["command"] for c in call.params.get("commands") or []]
                         if call.method == "setMyCommands" else None)
        return found

    def wait(self, predicate, timeout: float = 30.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = predicate()
            if result:
                return result
            time.sleep(0.02)
        raise AssertionError(f"timed out after {timeout} s waiting for the bot; calls so far: "
                             f"{[(c.method, c.params.get('text', '')[:60]) for c in self.calls[-10:]]}")

    def wait_messages(self, chat_id: int, count: int, timeout: float = 30.0) -> list[dict]:
        return self.wait(lambda: len(m := self.messages(chat_id)) >= count and m, timeout)

    # -- the Bot API

    def _sent_message(self, params: dict) -> dict:
        chat_id = int(params["chat_id"])
        msg = {"message_id": self._message_id(), "date": int(time.time()), "chat": self.chat(chat_id),
               "from": {"id": BOT_ID, "is_bot": True, "first_name": "Newsdesk", "username": BOT_USERNAME},
               "text": params.get("text", "")}
        if params.get("reply_markup"):
            msg["reply_markup"] = params["reply_markup"]
        params["message"] = msg
        with self._cond:
            self._shown[(chat_id, msg["message_id"])] = msg
        return msg

    def _edited_message(self, params: dict, text: bool = True) -> tuple[int, dict]:
        """editMessageText / editMessageReplyMarkup of one of the bot's messages: 400 for a message it never
        sent or (like Telegram) an edit that changes nothing."""
        key = (int(params.get("chat_id") or 0), int(params.get("message_id") or 0))
        with self._cond:
            old = self._shown.get(key)
            if old is None:
                return 400, {"ok": False, "error_code": 400, "description": "Bad Request: message to edit not found"}
            new = {**old, "edit_date": int(time.time())}
            if text:
                new["text"] = params.get("text", "")
            new.pop("reply_markup", None)
            if params.get("reply_markup"):
                new["reply_markup"] = params["reply_markup"]
            if all(new.get(k) == old.get(k) for k in ("text", "reply_markup")):
                return 400, {"ok": False, "error_code": 400, "description": "Bad Request: message is not modified"}
            self._shown[key] = new
        params["message"] = new
        return 200, {"ok": True, "result": new}

    def _get_updates(self, params: dict) -> list[dict]:
        offset = int(params.get("offset") or 0)
        deadline = time.monotonic() + float(params.get("timeout") or 0)
        with self._cond:
            self._updates = [u for u in self._updates if u["update_id"] >= offset]
            while not self._updates and not self._closing and time.monotonic() < deadline:
                self._cond.wait(deadline - time.monotonic())
            return list(self._updates[:int(params.get("limit") or 100)])

    def api(self, method: str, params: dict) -> tuple[int, dict]:
        if self._failures.get(method):
            status = self._failures[method].pop(0)
            self.calls.append(Call(method + ":failed", params))
            return status, {"ok": False, "error_code": status, "description": f"HTTP {status} from the proxy"}
        if self._floods.get(method):
            retry_after = self._floods[method].pop(0)
            self.calls.append(Call(method + ":flooded", params))
            return 429, {"ok": False, "error_code": 429, "description": "Too Many Requests: retry later",
                         "parameters": {"retry_after": retry_after}}
        if method == "getUpdates":
            return 200, {"ok": True, "result": self._get_updates(params)}
        self.calls.append(Call(method, params))
        if method == "getMe":
            result: Any = {"id": BOT_ID, "is_bot": True, "first_name": "Newsdesk", "username": BOT_USERNAME,
                           "can_join_groups": True, "can_read_all_group_messages": False,
                           "supports_inline_queries": False}
        elif method in TRUE_METHODS:
            result = True
        elif method == "sendMessage":
            result = self._sent_message(params)
        elif method in {"editMessageText", "editMessageReplyMarkup"}:
            return self._edited_message(params, text=method == "editMessageText")
        elif method == "deleteMessage":
            with self._cond:
                gone = self._shown.pop((int(params.get("chat_id") or 0), int(params.get("message_id") or 0)), None)
            if gone is None:
                return 400, {"ok": False, "error_code": 400, "description": "Bad Request: message to delete not found"}
            result = True
        elif method == "getFile":
            path, content = self.files[params["file_id"]]
            result = {"file_id": params["file_id"], "file_unique_id": "u" + params["file_id"],
                      "file_size": len(content), "file_path": path}
        else:
            self.unknown.append(method)
            return 404, {"ok": False, "error_code": 404, "description": "Not Found: method not found"}
        return 200, {"ok": True, "result": result}


def _handler(fake: FakeTelegram):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # a response goes out as two writes (headers, then body): with Nagle's algorithm on, the body waits for the
        # client's delayed ACK of the headers, ~40 ms on every keep-alive request, which real servers do not add
        disable_nagle_algorithm = True

        def log_message(self, *args) -> None:
            pass

        def _reply(self, status: int, body: bytes, kind: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # a long poll the bot gave up on
                self.wfile.write(body)

        def do_GET(self) -> None:  # file downloads
            prefix = f"/file/bot{fake.token}/"
            path = unquote(self.path)
            content = next((c for p, c in fake.files.values() if path == prefix + p), None)
            if content is None:
                fake.unknown.append("GET " + self.path.replace(fake.token, "<token>"))
                return self._reply(404, b"not found", "text/plain")
            self._reply(200, content, "application/octet-stream")

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            prefix = f"/bot{fake.token}/"
            if not self.path.startswith(prefix):
                fake.unknown.append("POST " + self.path.replace(fake.token, "<token>"))
                return self._reply(401, b'{"ok":false,"error_code":401,"description":"Unauthorized"}')
            if "json" in (self.headers.get("Content-Type") or ""):
                params = json.loads(raw or b"{}")
            else:
                params = dict(parse_qsl(raw.decode("utf-8"), keep_blank_values=True))
                params = {k: json.loads(v) if k in JSON_FIELDS else v for k, v in params.items()}
            status, body = fake.api(self.path[len(prefix):], params)
            self._reply(status, json.dumps(body).encode("utf-8"))

    return Handler
