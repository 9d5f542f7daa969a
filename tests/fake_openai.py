"""A real OpenAI-compatible HTTP server on 127.0.0.1 that plays a script, for tests of the LLM boundary.

    with FakeOpenAI() as fake:
        fake.script(rate_limited(retry_after="1"), Reply({"answerable": False, "sentences": []}))
        settings = Settings(openai_api_key="test-key", openai_base_url=fake.base_url)
        ...
        assert len(fake.chat_requests) == 2

Each POST /v1/chat/completions takes the next behaviour of the script (``fake.default`` once it is used
up): :class:`Reply` (a chat.completion whose message content is the given JSON or text), :class:`Status`
(an error status, e.g. ``rate_limited()``: 429 with ``Retry-After``), :class:`Sleep` (longer than the client's
timeout, then another behaviour), :class:`Close` (drop the connection without a response), :class:`Raw` (any
bytes as the response body: truncated JSON, garbage, a completion without choices), :class:`Stream` (a reply
streamed as server-sent events, piece by piece with delays, perhaps dying mid-way).
A request with ``"stream": true`` gets a :class:`Reply` streamed too (as ``Stream`` with no delays), unless
``fake.streaming`` says the server ``"ignore"``s streaming (one whole completion) or ``"refuse"``s it (a 400
naming ``stream``, which does not use up the script); a request without it gets a ``Stream`` as one completion.
``fake.formats`` says how the server treats ``response_format`` (as real servers do: some refuse
``json_schema`` with a 400 or a 500 that names it, some accept only ``json_object``); a refused request does
not use up the script.
POST /v1/embeddings returns deterministic unit vectors (float or base64, as asked). Every request is
recorded with its path, JSON body, headers and monotonic arrival time.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


@dataclass
class Reply:
    content: Any  # a dict/list is sent as JSON text; a str as it is
    finish_reason: str = "stop"


@dataclass
class Status:
    code: int
    headers: dict[str, str] = field(default_factory=dict)
    message: str = "scripted error"


def rate_limited(retry_after: str | None = "1") -> Status:
    return Status(429, {"Retry-After": retry_after} if retry_after is not None else {}, "rate limited")


@dataclass
class Sleep:
    seconds: float
    then: Any = None  # the behaviour after the sleep (default: an empty, unanswerable reply)


@dataclass
class Close:
    pass


@dataclass
class Raw:
    body: bytes
    status: int = 200
    content_type: str = "application/json"


def completion_body(message: Any, finish_reason: str = "stop", choices: list | None = None) -> bytes:
    """A chat.completion body with ``message`` as the first choice's message (``choices``: all of them)."""
    if choices is None:
        choices = [{"index": 0, "finish_reason": finish_reason, "logprobs": None, "message": message}]
    return json.dumps({"id": "chatcmpl-raw", "object": "chat.completion", "created": 0, "model": "fake-model",
                       "choices": choices}).encode("utf-8")


@dataclass
class Stream:
    """A reply streamed as server-sent events (``chat.completion.chunk``, then ``data: [DONE]``): ``content`` (as
    in :class:`Reply`) cut into pieces of ``chunk_chars`` characters, one event each, ``delay`` seconds apart,
    ``first_delay`` before the first (the prompt being read). ``die_after``: the connection is dropped after that
    many pieces, in the middle of the chunked body; ``error_after``: an error event instead (llama.cpp, vLLM)."""
    content: Any
    chunk_chars: int = 8
    delay: float = 0.0
    first_delay: float = 0.0
    die_after: int | None = None
    error_after: int | None = None
    finish_reason: str = "stop"

    def pieces(self) -> list[str]:
        text = _text(self.content)
        return [text[i:i + self.chunk_chars] for i in range(0, len(text), self.chunk_chars)]


def _text(content: Any) -> str:
    return content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)


Behaviour = Reply | Status | Sleep | Close | Raw | Stream
STREAM_REFUSAL = Status(400, message="stream is not supported by this server")

# What servers answer when they do not support a response_format type (``{type}`` is filled in):
# llama-cpp-python's server (FastAPI validation turned into a 500), llama.cpp forks, strict 400s.
LLAMA_CPP_PYTHON_REFUSAL = Status(500, message=(
    "[{'type': 'literal_error', 'loc': ('body', 'response_format', 'type'), 'msg': \"Input should be 'text' or "
    "'json_object'\", 'input': '{type}', 'ctx': {'expected': \"'text' or 'json_object'\"}}]"))
BAD_REQUEST_REFUSAL = Status(400, message="response_format type must be one of \"text\" or \"json_object\", "
                                          "but got: {type}")
UNPROCESSABLE_REFUSAL = Status(422, message="Unsupported value: 'response_format.type' does not support '{type}'")


@dataclass
class Formats:
    """Which ``response_format`` types the fake refuses, and with what (a :class:`Status` whose message may
    contain ``{type}``). Types not in ``refuse`` are accepted: the script answers."""
    refuse: set[str] = field(default_factory=set)
    refusal: Status = field(default_factory=lambda: LLAMA_CPP_PYTHON_REFUSAL)
UNANSWERABLE = Reply({"answerable": False, "sentences": []})


@dataclass
class Recorded:
    path: str
    body: Any
    headers: dict[str, str]  # names in lower case
    at: float  # time.monotonic() on arrival

    @property
    def messages(self) -> list[dict]:
        return self.body.get("messages", []) if isinstance(self.body, dict) else []

    def content(self, role: str) -> str:
        return "\n".join(m.get("content", "") for m in self.messages if m.get("role") == role)


def fake_embedding(text: str, dim: int) -> list[float]:
    rng = random.Random(hashlib.sha256(text.encode("utf-8")).digest())
    vec = [rng.gauss(0.0, 1.0) for _ in range(dim)]
    norm = sum(v * v for v in vec) ** 0.5 or 1.0
    return [v / norm for v in vec]


class FakeOpenAI:
    def __init__(self, embed_dim: int = 16, model: str = "fake-model") -> None:
        self.embed_dim = embed_dim
        self.model = model
        self.default: Behaviour = Status(500, message="the fake server's script is used up")
        self.formats = Formats()
        self.streaming = "sse"  # or "ignore" (whole completions) or "refuse" (400 naming stream)
        self.sent: list[tuple[float, str]] = []  # (monotonic time, piece) of every streamed piece sent
        self.requests: list[Recorded] = []
        self._script: list[Behaviour] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- test side -------------------------------------------------------------------------------
    def script(self, *behaviours: Behaviour) -> None:
        with self._lock:
            self._script.extend(behaviours)

    @property
    def base_url(self) -> str:
        assert self._server is not None, "use FakeOpenAI as a context manager"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    @property
    def chat_requests(self) -> list[Recorded]:
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    def __enter__(self) -> Self:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="fake-openai",
                                        daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # ---- server side -----------------------------------------------------------------------------
    def _next(self) -> Behaviour:
        with self._lock:
            return self._script.pop(0) if self._script else self.default

    def _record(self, path: str, body: Any, headers: dict[str, str]) -> None:
        with self._lock:
            self.requests.append(Recorded(path, body, headers, time.monotonic()))

    def _completion(self, reply: Reply) -> dict:
        content = _text(reply.content)
        return {
            "id": f"chatcmpl-fake{len(self.requests)}", "object": "chat.completion",
            "created": int(time.time()), "model": self.model,
            "choices": [{"index": 0, "finish_reason": reply.finish_reason, "logprobs": None,
                         "message": {"role": "assistant", "content": content, "refusal": None}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
        }

    def _embeddings(self, body: dict) -> dict:
        inputs = body.get("input", [])
        inputs = [inputs] if isinstance(inputs, str) else list(inputs)
        dim = int(body.get("dimensions") or self.embed_dim)
        data = []
        for i, text in enumerate(inputs):
            vec = fake_embedding(str(text), dim)
            if body.get("encoding_format") == "base64":
                data.append({"object": "embedding", "index": i,
                             "embedding": base64.b64encode(struct.pack(f"<{dim}f", *vec)).decode("ascii")})
            else:
                data.append({"object": "embedding", "index": i, "embedding": vec})
        return {"object": "list", "data": data, "model": body.get("model", self.model),
                "usage": {"prompt_tokens": len(inputs), "total_tokens": len(inputs)}}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    fake: FakeOpenAI

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that gave up (timeout) leaves a broken pipe behind: expected here


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # a response goes out as two writes (headers, then body): with Nagle's algorithm on, the body waits for the
    # client's delayed ACK of the headers, ~40 ms on every keep-alive request, which real servers do not add
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send_json(self, code: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        fake = self.server.fake
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body: Any = json.loads(raw or b"null")
        except json.JSONDecodeError:
            body = raw.decode("utf-8", "replace")
        fake._record(self.path, body, {k.lower(): v for k, v in self.headers.items()})
        if self.path.endswith("/embeddings") and isinstance(body, dict):
            self._send_json(200, fake._embeddings(body))
            return
        if not self.path.endswith("/chat/completions"):
            self._send_json(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
            return
        fmt = body.get("response_format") if isinstance(body, dict) else None
        kind = fmt.get("type") if isinstance(fmt, dict) else None
        if kind in fake.formats.refuse:
            refusal = fake.formats.refusal
            self._play(Status(refusal.code, refusal.headers, refusal.message.replace("{type}", str(kind))))
            return
        stream = isinstance(body, dict) and body.get("stream") is True and fake.streaming != "ignore"
        if stream and fake.streaming == "refuse":
            self._play(STREAM_REFUSAL)
            return
        self._play(fake._next(), stream)

    def _play(self, behaviour: Behaviour, stream: bool = False) -> None:
        fake = self.server.fake
        if isinstance(behaviour, Sleep):
            if not fake._stopping.wait(behaviour.seconds):
                self._play(behaviour.then or UNANSWERABLE, stream)
            return
        if isinstance(behaviour, Reply) and stream:
            behaviour = Stream(behaviour.content, finish_reason=behaviour.finish_reason)
        if isinstance(behaviour, Stream):
            if stream:
                self._stream(behaviour)
                return
            behaviour = Reply(behaviour.content, behaviour.finish_reason)
        if isinstance(behaviour, Close):
            self.close_connection = True
            return
        if isinstance(behaviour, Raw):
            self.send_response(behaviour.status)
            self.send_header("Content-Type", behaviour.content_type)
            self.send_header("Content-Length", str(len(behaviour.body)))
            self.end_headers()
            self.wfile.write(behaviour.body)
            return
        if isinstance(behaviour, Status):
            self._send_json(behaviour.code, {"error": {"message": behaviour.message, "type": "fake_error",
                                                       "code": behaviour.code}}, behaviour.headers)
            return
        self._send_json(200, fake._completion(behaviour))

    def _chunk(self, data: bytes) -> None:
        """One piece of a chunked body (HTTP/1.1 ``Transfer-Encoding: chunked``), sent at once."""
        self.wfile.write(b"%X\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _event(self, delta: dict, finish_reason: str | None = None) -> None:
        fake = self.server.fake
        chunk = {"id": "chatcmpl-fake-stream", "object": "chat.completion.chunk", "created": int(time.time()),
                 "model": fake.model,
                 "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]}
        self._chunk(b"data: " + json.dumps(chunk, ensure_ascii=False).encode("utf-8") + b"\n\n")

    def _stream(self, stream: Stream) -> None:
        fake = self.server.fake
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            self._event({"role": "assistant", "content": ""})
            for n, piece in enumerate(stream.pieces()):
                if fake._stopping.wait(stream.first_delay if n == 0 else stream.delay):
                    return
                if n == stream.die_after:
                    self.close_connection = True  # no last chunk: the body is cut off
                    return
                if n == stream.error_after:
                    error = {"error": {"code": 500, "message": "the model crashed", "type": "server_error"}}
                    self._chunk(b"data: " + json.dumps(error).encode("utf-8") + b"\n\n")
                    break
                self._event({"content": piece})
                with fake._lock:
                    fake.sent.append((time.monotonic(), piece))
            else:
                self._event({}, stream.finish_reason)
            self._chunk(b"data: [DONE]\n\n")
            self._chunk(b"")
        except (BrokenPipeError, ConnectionResetError):  # the client gave up
            self.close_connection = True
