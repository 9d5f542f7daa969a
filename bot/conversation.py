"""Conversation state, one module for both front ends (``newsdesk chat`` and the Telegram bot).

Per conversation (a Telegram chat, or the one terminal session of ``newsdesk chat``) it keeps:

- the recent turns (question and answer text), which the engine reads follow-up questions against; they
  expire after ``ttl_seconds`` without a new question, and at most ``turns`` are kept (0: no follow-ups);
- the answers behind the source (and vote) buttons, under a short random key per answer, for the last
  ``answers_kept`` answers of the conversation (an older button says the answer has expired): the whole
  ``Answer``, so a vote can record its question, mode, citations and retrieved passages;
- the last answer, for ``/sources``.

Everything is kept in one SQLite database (``Settings.conversations_path``, WAL), so it survives a restart, and
the bot and ``newsdesk chat`` can use one home at once: each write is one short transaction (``BEGIN IMMEDIATE``;
another process's is waited for up to ``BUSY_SECONDS``), and each front end has its own ``scope`` of keys. Why
SQLite and not python-telegram-bot's persistence: this state is shared with the terminal front end, which has
no PTB application; PTB's pickle files are rewritten whole by one process and are not safe with two; and a
transaction per change loses nothing at a crash or a ``kill -9``.

Bounded in size and age: per conversation ``turns`` turns and ``answers_kept`` answers; conversations unused
for ``max_age_seconds`` are forgotten with their answers, as are answers older than that; at most
``max_conversations`` conversations (the least recently used go first) and ``max_answers`` answers in all
(those of the last ``max_answers`` given; older ones go). Stored answers are zlib-compressed JSON: about 2.1 kB
for one citing five passages of 250 words, so the file stays under about 45 MB.

A damaged database (not a database, malformed) is one warning: it is moved aside (``….damaged``) and a fresh one
started; a file that cannot be opened, read or written (permissions, a full disk) is one warning and the state is
kept in memory until the process ends. Without a ``path`` everything is in memory from the start.

Every method blocks for one small transaction: the bot calls them in a worker thread. Nothing here talks to the
index, the store or the model: front ends ask the engine, then record the result.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import sqlite3
import threading
import time
import zlib
from collections.abc import Callable, Hashable
from dataclasses import asdict, fields
from pathlib import Path
from typing import TYPE_CHECKING

from newsdesk.index.errors import NewsdeskError

from .answers import Answer, Citation, Piece, Sentence, Turn

if TYPE_CHECKING:
    from newsdesk.index.settings import Settings

log = logging.getLogger(__name__)

ANSWERS_KEPT = 50  # answers whose source buttons still work, per conversation
MAX_CONVERSATIONS = 10_000  # the least recently used conversations are forgotten beyond this
MAX_ANSWERS = 20_000  # answers kept in all (42 MB measured, five cited passages each); older ones are forgotten
MAX_AGE_SECONDS = 30 * 86400  # conversations unused, and answers, older than this are forgotten
BUSY_SECONDS = 5.0  # how long a write waits for another process's transaction
WAL_PAGES = 256  # the write-ahead log is checkpointed (and truncated to this) every 256 pages, about 1 MB

_SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    scope TEXT NOT NULL, key TEXT NOT NULL,
    turns TEXT NOT NULL DEFAULT '[]',  -- JSON [[question, answer], ...], oldest first
    turn_at REAL NOT NULL DEFAULT 0,   -- when the last turn was added (the TTL runs from it)
    last_key TEXT,                     -- the answer /sources shows (NULL after /new)
    used_at REAL NOT NULL,
    PRIMARY KEY (scope, key));
CREATE INDEX IF NOT EXISTS conversations_used ON conversations (used_at);
CREATE TABLE IF NOT EXISTS answers (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    scope TEXT NOT NULL, key TEXT NOT NULL, answer_key TEXT NOT NULL,
    created REAL NOT NULL,
    record BLOB NOT NULL,              -- the Answer: zlib-compressed JSON
    UNIQUE (scope, key, answer_key));
CREATE INDEX IF NOT EXISTS answers_conversation ON answers (scope, key, seq);
CREATE INDEX IF NOT EXISTS answers_created ON answers (created);
CREATE TRIGGER IF NOT EXISTS conversation_forgotten AFTER DELETE ON conversations BEGIN
    DELETE FROM answers WHERE scope = old.scope AND key = old.key;
END;
"""

# SQLite's result codes (``sqlite3.Error.sqlite_errorname``, extended codes start with these) by what they mean
_BUSY = ("SQLITE_BUSY", "SQLITE_LOCKED")
_DAMAGED = ("SQLITE_CORRUPT", "SQLITE_NOTADB")
_UNUSABLE = ("SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_READONLY", "SQLITE_IOERR", "SQLITE_FULL", "SQLITE_AUTH")


def _kind(exc: sqlite3.Error) -> str | None:
    """What a SQLite error means for the file: "busy", "damaged", "unusable", or None (a bug: let it out)."""
    name = getattr(exc, "sqlite_errorname", None) or ""
    if type(exc) is sqlite3.DatabaseError and not name:  # quick_check found damage (see ``_connect``)
        return "damaged"
    for kind, prefixes in (("busy", _BUSY), ("damaged", _DAMAGED), ("unusable", _UNUSABLE)):
        if name.startswith(prefixes):
            return kind
    return None


def _dump(answer: Answer) -> bytes:
    return zlib.compress(json.dumps(asdict(answer), ensure_ascii=False).encode("utf-8"))


def _load(blob: bytes) -> Answer:
    """The ``Answer`` ``_dump`` stored; fields a later version added get their defaults, unknown ones are left."""
    data = json.loads(zlib.decompress(blob).decode("utf-8"))
    citations = []
    for c in data.get("citations", []):
        c = {k: c[k] for k in _names(Citation) if k in c}
        c["pieces"] = [Piece(*p) for p in c.get("pieces") or []]
        citations.append(Citation(**c))
    data["citations"] = citations
    data["sentences"] = [Sentence(text=s["text"], citations=list(s["citations"])) for s in data.get("sentences", [])]
    return Answer(**{k: data[k] for k in _names(Answer) if k in data})


def _names(cls) -> list[str]:
    return [f.name for f in fields(cls)]


class Conversations:
    """The state of every conversation, keyed by an id (a Telegram chat id; 0 for the terminal)."""

    def __init__(self, turns: int, ttl_seconds: float, answers_kept: int = ANSWERS_KEPT,
                 clock: Callable[[], float] = time.time, *, path: Path | None = None, scope: str = "",
                 max_age_seconds: float = MAX_AGE_SECONDS, max_conversations: int = MAX_CONVERSATIONS,
                 max_answers: int = MAX_ANSWERS) -> None:
        self.turns, self.ttl_seconds, self.answers_kept = turns, ttl_seconds, answers_kept
        self.path, self.scope = (Path(path) if path is not None else None), scope
        self.max_age_seconds, self.max_conversations, self.max_answers = (max_age_seconds, max_conversations,
                                                                          max_answers)
        self._clock = clock  # wall time by default: the state outlives the process
        self._lock = threading.Lock()  # the bot handles updates concurrently; one connection, one at a time
        self._db: sqlite3.Connection | None = None
        self._inode: int | None = None
        with self._lock:
            self._run(self._sweep, write=True)

    @classmethod
    def from_settings(cls, settings: Settings, scope: str) -> Conversations:
        """The conversations of one front end (``scope``: "telegram", "chat") in the home's database."""
        return cls(settings.history_turns, settings.history_ttl_seconds, path=settings.conversations_path,
                   scope=scope, max_age_seconds=settings.conversations_max_days * 86400)

    # -- the database -----------------------------------------------------------------------------------------

    def _connect(self, path: Path | None) -> None:
        """Open (and create) the database at ``path``, or one in memory."""
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists():  # questions are private: readable by this user only
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        db = sqlite3.connect(":memory:" if path is None else path, timeout=BUSY_SECONDS, isolation_level=None,
                             check_same_thread=False)
        try:
            if path is not None:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                db.execute(f"PRAGMA wal_autocheckpoint={WAL_PAGES}")  # the WAL is copied back every ~1 MB
                db.execute(f"PRAGMA journal_size_limit={WAL_PAGES * 4096}")  # and cut back to that size
                if (check := db.execute("PRAGMA quick_check").fetchone()[0]) != "ok":
                    raise sqlite3.DatabaseError(f"quick_check: {check}")
            db.executescript(_SCHEMA)
        except BaseException:
            db.close()
            raise
        self._db, self._inode = db, (path.stat().st_ino if path is not None else None)

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def close(self) -> None:
        with self._lock:
            self._close()

    def _run(self, work: Callable[[sqlite3.Connection], object], write: bool = False):
        """``work(db)`` in one transaction; a damaged or unusable file is replaced (see the module) and the work
        done again there. Another process holding the database longer than ``BUSY_SECONDS`` is a
        ``NewsdeskError``."""
        for attempt in (1, 2):
            try:
                if self._db is None:
                    self._connect(self.path)
                return self._transaction(work, write)
            except (sqlite3.Error, OSError) as exc:
                kind = _kind(exc) if isinstance(exc, sqlite3.Error) else "unusable"
                if kind == "busy":
                    raise NewsdeskError(f"the conversations file {self.path} is locked by another process") from exc
                if kind is None or attempt == 2:
                    raise
                self._recover(exc, kind)
        raise AssertionError("unreachable")

    def _transaction(self, work, write: bool):
        db = self._db
        db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            result = work(db)
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return result

    def _recover(self, exc: BaseException, kind: str) -> None:
        """After a damaged or unusable database: move a damaged file aside and start a fresh one, reopen a file
        another process already replaced, or keep the state in memory from now on."""
        self._close()
        path = self.path
        reason = getattr(exc, "sqlite_errorname", None) or type(exc).__name__
        if path is not None and kind == "damaged":
            if self._replaced(path):
                log.info("the conversations file %s was replaced by another process: reopening it", path)
                return
            aside = path.with_name(path.name + ".damaged")
            try:
                path.replace(aside)
                for suffix in ("-wal", "-shm"):
                    path.with_name(path.name + suffix).unlink(missing_ok=True)
            except OSError:
                pass  # then the fresh start below fails too, and the state is kept in memory
            else:
                log.warning("the conversations file %s is damaged (%s): moved it to %s and started afresh",
                            path, reason, aside.name)
                return
        log.warning("cannot use the conversations file %s (%s): conversations are kept in memory until the "
                    "process ends", path, reason)
        self.path = None

    def _replaced(self, path: Path) -> bool:
        """Whether ``path`` is no longer the file this process opened (another process moved that aside)."""
        try:
            return self._inode is not None and path.stat().st_ino != self._inode
        except OSError:
            return False

    def _key(self, key: Hashable) -> tuple[str, str]:
        return self.scope, str(key)

    def _sweep(self, db: sqlite3.Connection) -> None:
        """Forget what is over the bounds: old answers and conversations, the least recently used conversations
        beyond ``max_conversations``, the answers given before the last ``max_answers``."""
        oldest = self._clock() - self.max_age_seconds
        db.execute("DELETE FROM answers WHERE created < ?", (oldest,))
        db.execute("DELETE FROM conversations WHERE used_at < ?", (oldest,))
        db.execute("DELETE FROM conversations WHERE rowid IN (SELECT rowid FROM conversations "
                   "ORDER BY used_at DESC LIMIT -1 OFFSET ?)", (self.max_conversations,))
        # the answers of the last ``max_answers`` given (seq only grows): fewer when some were forgotten already
        db.execute("DELETE FROM answers WHERE seq <= (SELECT max(seq) FROM answers) - ?", (self.max_answers,))

    # -- the front ends' API ------------------------------------------------------------------------------------

    def history(self, key: Hashable) -> list[Turn]:
        """The turns a new question is read against: the last ``turns``, unless they have expired."""
        if self.turns <= 0:
            return []

        def read(db):
            return db.execute("SELECT turns, turn_at FROM conversations WHERE scope = ? AND key = ?",
                              self._key(key)).fetchone()

        with self._lock:
            row = self._run(read)
        if row is None or self._clock() - row[1] > self.ttl_seconds:
            return []
        return [Turn(question=q, answer=a) for q, a in json.loads(row[0])][-self.turns:]

    def remember(self, key: Hashable, question: str, answer: Answer) -> str:
        """Record an answered question; returns the key of its answer (for source and vote buttons)."""
        answer_key = secrets.token_urlsafe(6)
        record = _dump(answer)

        def write(db):
            now = self._clock()
            row = db.execute("SELECT turns, turn_at FROM conversations WHERE scope = ? AND key = ?",
                             self._key(key)).fetchone()
            turns = json.loads(row[0]) if row is not None and now - row[1] <= self.ttl_seconds else []
            turns = [*turns, [question, answer.text]][-self.turns:] if self.turns > 0 else []
            db.execute("INSERT INTO conversations (scope, key, turns, turn_at, last_key, used_at) "
                       "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (scope, key) DO UPDATE SET turns = excluded.turns, "
                       "turn_at = excluded.turn_at, last_key = excluded.last_key, used_at = excluded.used_at",
                       (*self._key(key), json.dumps(turns, ensure_ascii=False), now, answer_key, now))
            db.execute("INSERT INTO answers (scope, key, answer_key, created, record) VALUES (?, ?, ?, ?, ?)",
                       (*self._key(key), answer_key, now, record))
            db.execute("DELETE FROM answers WHERE scope = ? AND key = ? AND seq <= (SELECT seq FROM answers "
                       "WHERE scope = ? AND key = ? ORDER BY seq DESC LIMIT 1 OFFSET ?)",
                       (*self._key(key), *self._key(key), self.answers_kept))
            self._sweep(db)

        with self._lock:
            self._run(write, write=True)
        return answer_key

    def answer(self, key: Hashable, answer_key: str) -> Answer | None:
        """An earlier answer of this conversation, whole (None: unknown, expired, or another conversation's)."""
        def read(db):
            return db.execute("SELECT record FROM answers WHERE scope = ? AND key = ? AND answer_key = ? "
                              "AND created >= ?", (*self._key(key), answer_key,
                                                   self._clock() - self.max_age_seconds)).fetchone()

        with self._lock:
            row = self._run(read)
        return None if row is None else self._decoded(row[0])

    def _decoded(self, blob: bytes) -> Answer | None:
        try:
            return _load(blob)
        except (zlib.error, ValueError, TypeError, KeyError) as exc:  # a record this code did not write
            log.warning("an answer in the conversations file %s cannot be read (%s): ignoring it", self.path,
                        type(exc).__name__)
            return None

    def citations(self, key: Hashable, answer_key: str) -> list[Citation] | None:
        """The citations of an earlier answer (None: unknown or expired)."""
        answer = self.answer(key, answer_key)
        return None if answer is None else answer.citations

    def citation(self, key: Hashable, answer_key: str, n: int) -> Citation | None:
        return next((c for c in self.citations(key, answer_key) or [] if c.n == n), None)

    def last(self, key: Hashable) -> Answer | None:
        """The conversation's last answer (for ``/sources``), None after ``reset`` or before any."""
        def read(db):
            return db.execute("SELECT a.record FROM conversations c JOIN answers a ON a.scope = c.scope "
                              "AND a.key = c.key AND a.answer_key = c.last_key WHERE c.scope = ? AND c.key = ?",
                              self._key(key)).fetchone()

        with self._lock:
            row = self._run(read)
        return None if row is None else self._decoded(row[0])

    def reset(self, key: Hashable) -> None:
        """Start over (``/new``): forget the turns and the last answer; earlier source buttons keep working."""
        def write(db):
            db.execute("UPDATE conversations SET turns = '[]', turn_at = 0, last_key = NULL, used_at = ? "
                       "WHERE scope = ? AND key = ?", (self._clock(), *self._key(key)))

        with self._lock:
            self._run(write, write=True)
