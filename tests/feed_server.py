"""A small web site on 127.0.0.1 for the feed tests: RSS and Atom feeds and the article pages they link to, which
a test changes while it runs; conditional GETs answered 304 as a real server does (ETag, Last-Modified), and
every request recorded (path, its conditional headers, the status sent)."""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from email.utils import formatdate
from html import escape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Route:
    body: bytes
    content_type: str = "text/html; charset=utf-8"
    status: int = 200
    etag: bool = True  # send an ETag (else only Last-Modified)
    modified: float = 1_600_000_000.0  # Last-Modified, seconds since the epoch

    @property
    def tag(self) -> str:
        return '"' + hashlib.sha256(self.body).hexdigest()[:16] + '"'

    @property
    def last_modified(self) -> str:
        return formatdate(self.modified, usegmt=True)


@dataclass
class Request:
    path: str
    if_none_match: str | None
    if_modified_since: str | None
    status: int


@dataclass
class Story:
    guid: str
    title: str
    path: str  # the article page's path on the site (its link)
    date: str  # RFC 822 for RSS, ISO 8601 for Atom, as the test writes it
    summary: str


class FeedSite:
    """``with FeedSite() as site``: ``site.routes[path] = Route(...)``; ``site.url(path)``; ``site.requests``."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        site = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                site.answer(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FeedSite:
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def url(self, path: str) -> str:
        return self.base + path

    def answer(self, handler: BaseHTTPRequestHandler) -> None:
        path = handler.path
        with self._lock:
            route = self.routes.get(path)
        inm, ims = handler.headers.get("If-None-Match"), handler.headers.get("If-Modified-Since")
        if route is None:
            status, headers, body = 404, {"Content-Type": "text/plain"}, b"not here"
        elif route.status != 200:
            status, headers, body = route.status, {"Content-Type": "text/plain"}, b"broken"
        else:
            headers = {"Content-Type": route.content_type, "Last-Modified": route.last_modified}
            if route.etag:
                headers["ETag"] = route.tag
            fresh = (inm == route.tag) if (inm and route.etag) else (ims == route.last_modified if ims else False)
            status, body = (304, b"") if fresh else (200, route.body)
        with self._lock:
            self.requests.append(Request(path, inm, ims, status))
        handler.send_response(status)
        for key, value in headers.items():
            handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def requests_for(self, path: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    # building a site

    def page(self, story: Story, paragraphs: int = 3) -> None:
        """The article page of ``story`` at its path."""
        body = "".join(f"<p>{escape(story.summary)} Paragraph {n} of the full report gives the details that the "
                       f"feed's summary leaves out, with quotes from the officials involved.</p>"
                       for n in range(1, paragraphs + 1))
        html = (f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(story.title)}</title></head>"
                f"<body><nav><a href='/'>Home</a></nav><article><h1>{escape(story.title)}</h1>{body}</article>"
                f"</body></html>")
        self.routes[story.path] = Route(html.encode())

    def rss(self, path: str, title: str, stories: list[Story], **route) -> None:
        items = "".join(
            f"<item><title>{escape(s.title)}</title><link>{self.url(s.path)}</link>"
            f"<guid isPermaLink='false'>{escape(s.guid)}</guid><pubDate>{s.date}</pubDate>"
            f"<description>{escape('<p>' + s.summary + '</p>')}</description></item>" for s in stories)
        xml = (f"<?xml version='1.0' encoding='utf-8'?><rss version='2.0'><channel><title>{escape(title)}</title>"
               f"<link>{self.base}/</link><description>news</description>{items}</channel></rss>")
        self.routes[path] = Route(xml.encode(), "application/rss+xml; charset=utf-8", **self._next(path, route))

    def atom(self, path: str, title: str, stories: list[Story], **route) -> None:
        entries = "".join(
            f"<entry><title>{escape(s.title)}</title><link href='{self.url(s.path)}'/><id>{escape(s.guid)}</id>"
            f"<updated>{s.date}</updated><summary type='html'>{escape('<p>' + s.summary + '</p>')}</summary>"
            f"</entry>" for s in stories)
        xml = (f"<?xml version='1.0' encoding='utf-8'?><feed xmlns='http://www.w3.org/2005/Atom'>"
               f"<title>{escape(title)}</title><id>{self.base}/atom</id><updated>2020-10-01T00:00:00Z</updated>"
               f"{entries}</feed>")
        self.routes[path] = Route(xml.encode(), "application/atom+xml", **self._next(path, route))

    def _next(self, path: str, route: dict) -> dict:
        """A rewritten feed is modified a minute after its previous version (its Last-Modified changes)."""
        if path in self.routes and "modified" not in route:
            route = {**route, "modified": self.routes[path].modified + 60}
        return route
