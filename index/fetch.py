"""Fetching one web page safely: http(s) only, bounded in time and size, redirects re-checked hop by hop, and
no requests to private or local addresses unless ``NEWSDESK_ALLOW_PRIVATE_URLS`` is on.

When private addresses are refused, the host is resolved here, every address it resolves to is checked, and the
request is sent to the checked address (with the original ``Host`` header and TLS server name), so a DNS answer
that changes between the check and the connection cannot reach an internal service.

``NEWSDESK_FETCH_TIMEOUT`` bounds the whole fetch (connecting, every redirect, headers and body), not each read:
every socket operation is given at most the time left until the deadline, so a server that trickles its
headers or its body one byte at a time cannot hold the fetch past it.

A user name and password in the URL (``https://user:secret@host/``) are sent, as HTTP basic authentication,
only to that URL's scheme, host and port (a redirect elsewhere does not get them), and appear in no URL this
module returns or message it raises (``strip_userinfo``).
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
import ssl
import time
from dataclasses import dataclass

import httpcore
import httpx

from .errors import FetchError
from .settings import Settings

MAX_REDIRECTS = 5
USER_AGENT = "newsdesk/0.1 (news article indexer)"
_ACCEPTED_TYPES = ("text/html", "application/xhtml+xml", "text/plain", "text/markdown")
_USERINFO = re.compile(r"^(\s*[a-zA-Z][a-zA-Z0-9+.-]*://)[^/?#\\]*@")


def strip_userinfo(url: str) -> str:
    """``url`` without the user name and password before its host (``https://user:pw@host/x`` →
    ``https://host/x``); anything else unchanged, even when it is not a valid URL."""
    return _USERINFO.sub(r"\1", url, count=1)


def same_site(url: str, other: str) -> bool:
    """Whether two http(s) URLs are on the same host (``www.`` aside, any port or scheme)."""
    def host(u: str) -> str | None:
        try:
            name = httpx.URL(u).host.lower().rstrip(".")
        except (httpx.InvalidURL, TypeError, ValueError):
            return None
        return name[4:] if name.startswith("www.") else name

    a, b = host(url), host(other)
    return a is not None and a == b and a != ""


@dataclass(frozen=True)
class FetchedPage:
    url_final: str  # the URL after redirects
    content_type: str  # media type without parameters, lower case ("" when the server sent none)
    body: bytes
    charset: str | None = None  # from the Content-Type header, when given
    status: int = 200  # 304: not modified since the validators sent (``body`` is then empty)
    etag: str | None = None  # the validators to send next time (``fetch_url``'s ``etag``/``last_modified``)
    last_modified: str | None = None

    @property
    def not_modified(self) -> bool:
        return self.status == 304

    @property
    def is_html(self) -> bool:
        if self.content_type:
            return self.content_type in ("text/html", "application/xhtml+xml")
        return self.body.lstrip()[:1] == b"<"

    @property
    def text(self) -> str:
        """The body decoded with the declared charset (UTF-8 when none), undecodable bytes replaced."""
        try:
            return self.body.decode(self.charset or "utf-8", errors="replace")
        except LookupError:
            return self.body.decode("utf-8", errors="replace")


def fetch_url(url: str, settings: Settings, *, accept: tuple[str, ...] = _ACCEPTED_TYPES,
              etag: str | None = None, last_modified: str | None = None) -> FetchedPage:
    """Download one HTML or text page (``accept``: the media types taken instead, e.g. a feed's). With ``etag`` /
    ``last_modified`` the request is conditional (If-None-Match / If-Modified-Since): a 304 answer is a page
    whose ``not_modified`` is true. Raises :class:`FetchError` with a one-line message on any failure."""
    timeout = settings.fetch_timeout or None
    deadline = time.monotonic() + timeout if timeout else None  # for the whole fetch, redirects included
    logging.getLogger("httpx").setLevel(logging.WARNING)
    wanted = "text/html,application/xhtml+xml,text/plain" if accept == _ACCEPTED_TYPES else ",".join(accept)
    headers = {"User-Agent": USER_AGENT, "Accept": f"{wanted};q=0.9,*/*;q=0.1"}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    current = _parse_url(url)
    auth, auth_origin = _credentials(current), _origin(current)
    current = _without_userinfo(current)
    shown = str(current)
    with httpx.Client(timeout=httpx.Timeout(timeout), follow_redirects=False, trust_env=False, headers=headers,
                      transport=_transport(deadline)) as client:
        for _hop in range(MAX_REDIRECTS + 1):
            host = current.host
            try:
                request = _build_request(client, current, settings)
                response = client.send(request, stream=True, auth=auth if _origin(current) == auth_origin else None)
            except httpx.HTTPError as exc:
                raise FetchError(f"could not reach {host}: {_describe(exc)}") from exc
            try:
                if response.status_code == 304 and (etag or last_modified):  # httpx counts it as a redirect
                    return FetchedPage(str(current), "", b"", status=304,
                                       etag=response.headers.get("etag") or etag,
                                       last_modified=response.headers.get("last-modified") or last_modified)
                if response.is_redirect:
                    location = response.headers.get("location", "")
                    if not location:
                        raise FetchError(f"{host} sent a redirect without a location")
                    current = _without_userinfo(_parse_url(str(current.join(location))))
                    continue
                return _read_page(response, current, settings, accept)
            except httpx.HTTPError as exc:
                raise FetchError(f"could not read the page from {host}: {_describe(exc)}") from exc
            finally:
                response.close()
    raise FetchError(f"{shown} redirected more than {MAX_REDIRECTS} times")


def _parse_url(url: str) -> httpx.URL:
    shown = strip_userinfo(url.strip())
    try:
        parsed = httpx.URL(url.strip())
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise FetchError(f"not a valid URL: {shown}") from exc
    if parsed.scheme not in ("http", "https"):
        raise FetchError(f"only http and https URLs can be fetched, not {parsed.scheme or 'this'}: {shown}")
    if not parsed.host:
        raise FetchError(f"the URL has no host: {shown}")
    return parsed


def _credentials(url: httpx.URL) -> httpx.BasicAuth | None:
    return httpx.BasicAuth(url.username, url.password) if url.userinfo else None


def _without_userinfo(url: httpx.URL) -> httpx.URL:
    return url.copy_with(username=None, password=None) if url.userinfo else url


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80)


# ---------------------------------------------------------------- one deadline for the whole fetch


def _transport(deadline: float | None) -> httpx.HTTPTransport:
    """httpx's transport, its connections made by ``_DeadlineBackend``. (httpx has no setting for the network
    backend: the connection pool it made is replaced by the same pool with ours.)"""
    transport = httpx.HTTPTransport(trust_env=False)
    if deadline is not None:
        transport._pool = httpcore.ConnectionPool(ssl_context=httpx.create_ssl_context(trust_env=False),
                                                  network_backend=_DeadlineBackend(deadline))
    return transport


class _DeadlineBackend(httpcore.NetworkBackend):
    """Plain sockets (httpcore's own backend) whose every operation is given at most the time left until
    ``deadline``; past it, an operation times out at once (httpx: a ``TimeoutException``)."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self._backend = httpcore.SyncBackend()

    def left(self, timeout: float | None, error: type[Exception]) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise error("the fetch took longer than NEWSDESK_FETCH_TIMEOUT")
        return left if timeout is None else min(timeout, left)

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        stream = self._backend.connect_tcp(host, port, self.left(timeout, httpcore.ConnectTimeout), local_address,
                                           socket_options)
        return _DeadlineStream(stream, self)

    def connect_unix_socket(self, path, timeout=None, socket_options=None):
        return _DeadlineStream(self._backend.connect_unix_socket(
            path, self.left(timeout, httpcore.ConnectTimeout), socket_options), self)

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, stream: httpcore.NetworkStream, backend: _DeadlineBackend) -> None:
        self._stream, self._backend = stream, backend

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, self._backend.left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, self._backend.left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(self, ssl_context, server_hostname=None, timeout=None):
        stream = self._stream.start_tls(ssl_context, server_hostname,
                                        self._backend.left(timeout, httpcore.ConnectTimeout))
        return _DeadlineStream(stream, self._backend)

    def get_extra_info(self, info: str):
        return self._stream.get_extra_info(info)


def _build_request(client: httpx.Client, url: httpx.URL, settings: Settings) -> httpx.Request:
    if settings.allow_private_urls:
        return client.build_request("GET", url)
    address = _public_address(url)
    # connect to the address we checked, while telling the server (and TLS) the real host name
    return client.build_request(
        "GET", url.copy_with(host=address), headers={"Host": url.netloc.decode("ascii")},
        extensions={"sni_hostname": url.raw_host.decode("ascii")},
    )


def _public_address(url: httpx.URL) -> str:
    """Resolve the URL's host; return one of its addresses, or refuse if any of them is not public."""
    host = url.raw_host.decode("ascii")
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise FetchError(f"could not reach {url.host}: host not found") from exc
    addresses = [str(info[4][0]).split("%")[0] for info in infos]
    for address in addresses:
        if not is_public_address(address):
            raise FetchError(f"refusing to fetch {url.host}: it resolves to the private or local address "
                             f"{address} (set NEWSDESK_ALLOW_PRIVATE_URLS=1 to allow)")
    if not addresses:
        raise FetchError(f"could not reach {url.host}: host not found")
    return addresses[0]


def is_public_address(address: str) -> bool:
    """False for private, loopback, link-local, multicast, reserved, unspecified and other non-global
    addresses (IPv4-mapped IPv6 addresses are judged by their IPv4 address)."""
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_reserved
                or ip.is_unspecified or not ip.is_global)


def _read_page(response: httpx.Response, url: httpx.URL, settings: Settings,
               accept: tuple[str, ...] = _ACCEPTED_TYPES) -> FetchedPage:
    if not response.is_success:
        raise FetchError(f"{url} returned HTTP {response.status_code}")
    raw_type = response.headers.get("content-type", "")
    content_type = raw_type.split(";")[0].strip().lower()
    if content_type and content_type not in accept:
        # (``newsdesk index`` knows a feed URL by this refusal of its type: ``index.feeds.refused_feeds``)
        expected = "an HTML or text page" if accept == _ACCEPTED_TYPES else f"one of {', '.join(accept)}"
        raise FetchError(f"{url} is {content_type}, not {expected}")
    limit = settings.max_file_bytes
    too_big = FetchError(f"{url} is larger than the {settings.max_file_mb:g} MB limit")
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_big
    body = bytearray()
    for chunk in response.iter_bytes():
        body += chunk
        if len(body) > limit:
            raise too_big
    charset = response.charset_encoding if content_type else None
    return FetchedPage(url_final=str(url), content_type=content_type, body=bytes(body), charset=charset,
                       status=response.status_code, etag=response.headers.get("etag"),
                       last_modified=response.headers.get("last-modified"))


def _describe(exc: BaseException) -> str:
    """A short, well-known phrase for an httpx error (never its raw message)."""
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    causes = []
    seen: BaseException | None = exc
    while seen is not None and len(causes) < 10:
        causes.append(seen)
        seen = seen.__cause__ or seen.__context__
    if any(isinstance(c, ssl.SSLCertVerificationError) for c in causes):
        return "its TLS certificate could not be verified"
    if any(isinstance(c, ssl.SSLError) for c in causes):
        return "the TLS connection failed"
    if any(isinstance(c, ConnectionRefusedError) for c in causes):
        return "connection refused"
    if any(isinstance(c, socket.gaierror) for c in causes):
        return "host not found"
    if isinstance(exc, httpx.ConnectError):
        return "connection failed"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "the server closed the connection or sent an invalid response"
    if isinstance(exc, httpx.DecodingError):
        return "the response could not be decompressed"
    if isinstance(exc, (httpx.UnsupportedProtocol, httpx.InvalidURL)):
        return "invalid URL"
    return "the request failed"
