"""Loading articles from files, folders, JSON and web pages (a real HTTP server on 127.0.0.1)."""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from newsdesk.index import fetch
from newsdesk.index.errors import FetchError
from newsdesk.index.fetch import fetch_url, is_public_address
from newsdesk.index.loaders import find_dateline, guess_lang, load_sources, parse_date
from newsdesk.index.settings import Settings
from newsdesk.index.types import LoadResult

KARABAKH = Path(__file__).resolve().parents[1] / "examples" / "articles" / "karabakh-2020-09-28.txt"
LOCAL = Settings(allow_private_urls=True, fetch_timeout=5.0)  # the test server lives on 127.0.0.1

TITLE = "انفجار في مرفأ بيروت"
DATELINE = "(بيروت / رويترز - 4 آب 2020م) هز انفجار ضخم مرفأ بيروت مساء الثلاثاء."
ARABIC_BODY = f"{TITLE}\n\n{DATELINE}\n\nوقالت السلطات  إن  عدد الضحايا ارتفع.   \nوتابعت فرق الإنقاذ البحث."


def load(*sources: str | Path, settings: Settings = LOCAL) -> LoadResult:
    return load_sources([str(s) for s in sources], settings)


def only_article(result: LoadResult):
    assert result.failed == []
    assert len(result.articles) == 1
    return result.articles[0]


def only_failure(result: LoadResult):
    assert result.articles == []
    assert len(result.failed) == 1
    failure = result.failed[0]
    assert "\n" not in failure.error and "Traceback" not in failure.error
    return failure


# ---------------------------------------------------------------- the real sample


def test_real_karabakh_article():
    article = only_article(load(KARABAKH))
    assert article.id == "karabakh-2020-09-28"
    assert article.title == "يريفان تعلن استخدام أذربيجان لنظام قاذفات اللهب الثقيل في قره باغ"
    assert article.source == "سبوتنيك"
    assert article.published == "2020-09-28"
    assert article.lang == "ar"
    assert article.text.startswith(article.title + "\n\n(پاکستان پوائنٹ نیوز / سبوتنيك - 28 سبتمبر 2020ء)")
    assert article.text == KARABAKH.read_text(encoding="utf-8").strip()
    assert article.origin == str(KARABAKH) and article.root is None


# ---------------------------------------------------------------- text files


def test_text_is_normalised_at_the_ends_and_exact_inside(tmp_path):
    path = tmp_path / "beirut.txt"
    path.write_bytes(("\r\n  \r\n  " + ARABIC_BODY.replace("\n", "\r\n") + "\r\n\r\n  \r\n").encode())
    article = only_article(load(path))
    assert article.text == ARABIC_BODY  # CRLF → LF, white space at the ends gone, inner spaces kept
    assert article.title == TITLE
    assert (article.source, article.published, article.lang) == ("رويترز", "2020-08-04", "ar")


def test_front_matter_is_metadata_not_text(tmp_path):
    path = tmp_path / "fm.md"
    path.write_text("---\ntitle: \"Port blast\"\nurl: https://example.com/blast\nsource: Example Daily\n"
                    "published: 2020-08-05\nlang: en\nauthor: ignored\n---\n\n# Port blast\n\nA blast hit the port.\n",
                    encoding="utf-8")
    article = only_article(load(path))
    assert article.text == "# Port blast\n\nA blast hit the port."
    assert (article.title, article.url, article.source, article.published, article.lang) == (
        "Port blast", "https://example.com/blast", "Example Daily", "2020-08-05", "en")


def test_front_matter_without_published_takes_the_dateline_date(tmp_path):
    path = tmp_path / "fm.txt"
    path.write_text(f"---\nsource: المصدر\n---\n{ARABIC_BODY}", encoding="utf-8")
    article = only_article(load(path))
    assert article.source == "المصدر" and article.published == "2020-08-04"
    assert article.text == ARABIC_BODY


def test_markdown_title_without_hashes_and_english_lang(tmp_path):
    path = tmp_path / "note.md"
    path.write_text("## Storm reaches the coast\n\n(Reuters - 28 September 2020) Winds hit the coast.\n")
    article = only_article(load(path))
    assert article.title == "Storm reaches the coast"
    assert article.text.startswith("## Storm reaches the coast")
    assert (article.source, article.published, article.lang) == ("Reuters", "2020-09-28", "en")


def test_a_markdown_rule_at_the_top_is_not_front_matter(tmp_path):
    path = tmp_path / "rule.md"
    path.write_text("---\nJust a line of prose here.\n---\nMore prose.\n")
    article = only_article(load(path))
    assert article.text.startswith("---\nJust a line")


@pytest.mark.parametrize("encode", [
    lambda s: s.encode("utf-8"),
    lambda s: s.encode("utf-8-sig"),
    lambda s: s.encode("utf-16"),  # with BOM
    lambda s: s.encode("utf-16-le"),  # no BOM
    lambda s: s.encode("utf-16-be"),  # no BOM
    lambda s: s.encode("cp1256"),
], ids=["utf-8", "utf-8-bom", "utf-16-bom", "utf-16-le", "utf-16-be", "windows-1256"])
def test_every_supported_encoding_gives_the_same_article(tmp_path, encode):
    path = tmp_path / "enc.txt"
    path.write_bytes(encode(ARABIC_BODY))
    article = only_article(load(path))
    assert article.text == ARABIC_BODY  # no BOM, no mojibake
    assert article.title == TITLE and article.published == "2020-08-04"


@pytest.mark.parametrize(("content", "error"), [
    (b"", "empty file"),
    (b"  \n\r\n\t \n", "empty file"),
    (b"---\ntitle: Nothing\n---\n\n", "empty file"),
    ("\ufeff  \n".encode(), "empty file"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x01\x00" + bytes(range(256)) * 4, "binary file, not text"),
    (b"header\x01\x02\x03\x04\x05\x06\x07\x08\x0e\x0f\x10\x11 trailer", "binary file, not text"),
    ("Le café était fermé à Noël, déjà.".encode("latin-1"),
     "cannot decode text (not UTF-8, UTF-16 or Windows-1256)"),
])
def test_unusable_files_fail_with_a_reason_and_keep_their_id(tmp_path, content, error):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    failure = only_failure(load(path))
    assert (failure.source, failure.error, failure.article_id) == (str(path), error, "bad")


def test_oversized_file_is_refused_before_it_is_read(tmp_path, monkeypatch):
    path = tmp_path / "big.txt"
    path.write_text("x" * 3000)
    small = replace(LOCAL, max_file_mb=0.002)  # 2097 bytes

    def no_reading(*args, **kwargs):
        raise AssertionError("the file was opened")

    monkeypatch.setattr(Path, "open", no_reading)
    failure = only_failure(load(path, settings=small))
    assert failure.error == "file is larger than the 0.002 MB limit"


def test_file_at_the_size_limit_loads(tmp_path):
    path = tmp_path / "edge.txt"
    path.write_text("y" * 2097)
    assert only_article(load(path, settings=replace(LOCAL, max_file_mb=0.002))).text == "y" * 2097


# ---------------------------------------------------------------- folders, ids, failures


def test_folder_ids_roots_and_skipped_files(tmp_path):
    folder = tmp_path / "news"
    (folder / "2020" / "09").mkdir(parents=True)
    (folder / ".git").mkdir()
    (folder / "2020" / "09" / "karabakh.txt").write_bytes(KARABAKH.read_bytes())
    (folder / "top.md").write_text("# Top\n\nBody.\n")
    (folder / ".hidden.txt").write_text("hidden text")
    (folder / ".git" / "notes.txt").write_text("inside a hidden folder")
    (folder / "photo.png").write_bytes(b"\x89PNG\x00\x00")
    (folder / "report.pdf").write_bytes(b"%PDF-1.4")
    direct = tmp_path / "direct.txt"
    direct.write_text("Direct\n\nGiven by itself.\n")

    result = load(folder, direct)
    assert result.failed == []  # hidden files and other extensions are skipped silently
    by_id = {a.id: a for a in result.articles}
    assert set(by_id) == {"2020/09/karabakh", "top", "direct"}
    assert result.roots == [str(folder.resolve())]
    assert by_id["2020/09/karabakh"].root == str(folder.resolve())
    assert by_id["2020/09/karabakh"].origin == str(folder / "2020" / "09" / "karabakh.txt")
    assert by_id["2020/09/karabakh"].published == "2020-09-28"
    assert by_id["direct"].root is None


def test_bad_sources_fail_while_the_rest_loads(tmp_path):
    good = tmp_path / "good.txt"
    good.write_text("Good\n\nFine text.\n")
    odd = tmp_path / "scan.pdf"
    odd.write_bytes(b"%PDF-1.4")
    missing = tmp_path / "missing.txt"
    result = load(missing, good, odd, "ftp://example.com/a.txt", " ")
    assert [a.id for a in result.articles] == ["good"]
    errors = {f.source: f.error for f in result.failed}
    assert errors[str(missing)] == "no such file or folder"
    assert errors[str(odd)].startswith("unsupported file type '.pdf'")
    assert "only http and https" in errors["ftp://example.com/a.txt"]
    assert errors[" "].startswith("empty source")  # not the current folder


def test_duplicate_ids_are_reported_but_the_same_file_twice_is_not(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "story.txt").write_text("Story\n\ntext one\n")
    (folder / "story.md").write_text("# Story\n\ntext two\n")
    (folder / "other.txt").write_text("Other\n\ntext three\n")
    result = load(folder, folder / "other.txt")
    assert sorted(a.id for a in result.articles) == ["other", "story"]
    assert [(f.source, f.article_id) for f in result.failed] == [(str(folder / "story.txt"), "story")]
    assert "duplicate article id 'story'" in result.failed[0].error
    assert next(a for a in result.articles if a.id == "other").root == str(folder.resolve())


# ---------------------------------------------------------------- JSON and JSON Lines


def test_json_list_records(tmp_path):
    path = tmp_path / "batch.json"
    records = [
        {"id": "a1", "title": "First", "text": "First\n\nBody one.", "url": "https://e.com/1",
         "source": "Wire", "published": "28 September 2020", "lang": "en"},
        {"text": "مقال بلا معرف\n\nنص المقال."},
        {"id": "a3", "title": "No text"},
        {"id": 4, "title": "Title not in text", "text": "Body four."},
    ]
    path.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    result = load(path)
    by_id = {a.id: a for a in result.articles}
    sha = hashlib.sha256(records[1]["text"].encode()).hexdigest()[:16]
    assert set(by_id) == {"a1", sha, "4"}
    assert (by_id["a1"].url, by_id["a1"].source, by_id["a1"].published) == ("https://e.com/1", "Wire", "2020-09-28")
    assert by_id[sha].title == "مقال بلا معرف" and by_id[sha].lang == "ar"
    assert by_id["4"].text == "Title not in text\n\nBody four."  # the text always starts with its title
    assert [(f.source, f.error, f.article_id) for f in result.failed] == [
        (f"{path}:3", "record has no text", "a3")]


def test_jsonl_records_and_a_broken_line(tmp_path):
    path = tmp_path / "feed.jsonl"
    path.write_text('{"id": "x1", "text": "One\\n\\nfirst"}\n\n{"id": "x2", "text": \n'
                    '{"id": "x3", "text": "Three\\n\\nthird", "published": "٣ تشرين الأول ٢٠١٩"}\n',
                    encoding="utf-8")
    result = load(path)
    assert [a.id for a in result.articles] == ["x1", "x3"]
    assert result.articles[1].published == "2019-10-03"
    assert result.articles[0].origin == f"{path}:1"
    assert len(result.failed) == 1
    assert result.failed[0].source == f"{path}:3"
    assert result.failed[0].error.startswith("invalid JSON on line 3")


def test_invalid_json_file_names_the_line(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('[\n {"text": "ok"},\n {"text": }\n]')
    failure = only_failure(load(path))
    assert failure.source == str(path) and failure.error.startswith("invalid JSON on line 3")


def test_single_json_object(tmp_path):
    path = tmp_path / "one.json"
    path.write_bytes(json.dumps({"id": "solo", "text": "Solo\n\nالنص"}).encode("utf-8-sig"))
    assert only_article(load(path)).id == "solo"


# ---------------------------------------------------------------- dates and languages


@pytest.mark.parametrize(("value", "iso"), [
    ("28 سبتمبر 2020ء", "2020-09-28"),
    ("٢٨ أيلول/سبتمبر ٢٠٢٠م", "2020-09-28"),
    ("1 كانون الثاني 2021", "2021-01-01"),
    ("15 تشرين الثاني 2019", "2019-11-15"),
    ("3 آذار 2022", "2022-03-03"),
    ("5 إبريل 2020", "2020-04-05"),
    ("5 ابريل 2020", "2020-04-05"),
    ("7 يوليو 2015", "2015-07-07"),
    ("28 September 2020", "2020-09-28"),
    ("28 Sep 2020", "2020-09-28"),
    ("Sep 28, 2020", "2020-09-28"),
    ("2020-09-28", "2020-09-28"),
    ("2020-09-28T10:00:00Z", "2020-09-28"),
    ("31 فبراير 2020", None),
    ("next Tuesday", None),
])
def test_parse_date(value, iso):
    assert parse_date(value) == iso


@pytest.mark.parametrize(("text", "expected"), [
    ("Title\n\n(Reuters - 28 September 2020) Text.", ("Reuters", "2020-09-28")),
    ("عنوان\n\n(دمشق / سانا - ١٢ حزيران ٢٠٢١) نص.", ("سانا", "2021-06-12")),
    ("Title\n\nNo dateline here (Reuters - 28 September 2020).", (None, None)),
    ("Title\n\n(a note - not a date) Text.", (None, None)),
])
def test_find_dateline(text, expected):
    assert find_dateline(text) == expected


@pytest.mark.parametrize(("text", "lang"), [
    ("هذا نص عربي طويل نسبيا فيه كلمة English", "ar"),
    ("This is English with كلمة عربية", "en"),
    ("Это русский текст", None),
    ("12345 !!!", None),
])
def test_guess_lang(text, lang):
    assert guess_lang(text) == lang


# ---------------------------------------------------------------- HTML files

MENU = "<nav><ul>" + "".join(f'<li><a href="/c{i}">MenuItem{i} section</a></li>' for i in range(15)) + "</ul></nav>"
SIDEBAR = ('<div class="sidebar"><h3>Most read</h3><ul>'
           + "".join(f'<li><a href="/s{i}">SidebarStory{i} about something else</a></li>' for i in range(8))
           + "</ul></div>")
PARAGRAPHS = [
    "(بيروت / رويترز - 4 أغسطس 2020) هز انفجار ضخم مرفأ بيروت مساء الثلاثاء وتصاعدت سحابة كبيرة.",
    "وقال مسؤولون إن عدد الضحايا ارتفع خلال الليل وإن المستشفيات امتلأت بالمصابين.",
    "وتابعت فرق الإنقاذ البحث عن مفقودين تحت الأنقاض حتى صباح الأربعاء.",
]


def article_page(*, canonical: str | None = None, wrap: str = "article", charset: str = "utf-8") -> str:
    head = f'<meta charset="{charset}"><title>انفجار بيروت | موقع الأخبار</title>'
    if canonical:
        head += (f'<link rel="canonical" href="{canonical}">'
                 '<meta property="article:published_time" content="2020-08-05T08:00:00Z">'
                 '<meta property="og:site_name" content="موقع الأخبار">')
    head += "<script>var SCRIPT_SECRET = 'ScriptText';</script><style>.x{color:red}</style>"
    body = "<h1>انفجار بيروت</h1>" + "".join(f"<p>{p}</p>" if wrap == "article" else f"<div>{p}</div>"
                                              for p in PARAGRAPHS)
    main = f"<main><article>{body}</article></main>" if wrap == "article" else f"<div>{body}</div>"
    return (f"<!doctype html><html lang='ar'><head>{head}</head><body><header>{MENU}</header>{main}{SIDEBAR}"
            f"<footer><p>FooterText جميع الحقوق محفوظة</p></footer>"
            f"<script>console.log('MoreScriptText')</script></body></html>")


NO_ARTICLE_PAGE = ("<html><head><title>Home</title><script>var x = 'ScriptText';</script></head><body>"
                   "<nav><a href='/'>Home</a> <a href='/sports'>Sports</a></nav><footer>(c) 2024</footer>"
                   "</body></html>")


def assert_main_text_only(text: str) -> None:
    for paragraph in PARAGRAPHS:
        assert paragraph in text
    for noise in ("MenuItem", "SidebarStory", "ScriptText", "SCRIPT_SECRET", "FooterText", "color:red"):
        assert noise not in text


def test_html_file_keeps_the_article_and_drops_the_rest(tmp_path):
    path = tmp_path / "beirut.html"
    path.write_text(article_page(canonical="https://news.example.com/2020/08/beirut"), encoding="utf-8")
    article = only_article(load(path))
    assert_main_text_only(article.text)
    assert article.id == "beirut"  # a file's id comes from its name, not its canonical URL
    assert article.url == "https://news.example.com/2020/08/beirut"
    assert article.title == "انفجار بيروت"
    assert article.text.startswith("انفجار بيروت\n\n")
    assert (article.published, article.source, article.lang) == ("2020-08-04", "موقع الأخبار", "ar")


def test_short_article_in_plain_divs_still_yields_text(tmp_path):
    path = tmp_path / "short.htm"
    path.write_text(article_page(wrap="div"), encoding="utf-8")
    article = only_article(load(path))
    assert_main_text_only(article.text)


def test_windows_1256_html_file(tmp_path):
    path = tmp_path / "old.html"
    path.write_bytes(article_page(charset="windows-1256").encode("cp1256"))
    assert_main_text_only(only_article(load(path)).text)


def test_html_without_article_text(tmp_path):
    path = tmp_path / "home.html"
    path.write_text(NO_ARTICLE_PAGE)
    failure = only_failure(load(path))
    assert (failure.error, failure.article_id) == ("no article text found in the page", "home")


# ---------------------------------------------------------------- URLs (a real server on 127.0.0.1)

HUGE_BYTES = 64 * 1024 * 1024  # far more than socket buffers can absorb


@dataclass
class Server:
    base: str
    port: int
    hosts: list[str] = field(default_factory=list)  # Host header of every request
    huge_sent: dict[str, int] = field(default_factory=dict)  # path -> bytes written before hang-up


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    state = Server(base="", port=0)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def send(self, status: int, body: bytes, content_type: str = "text/html; charset=utf-8",
                 headers: dict[str, str] | None = None, length: int | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body) if length is None else length))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            try:
                self.wfile.write(body)
            except OSError:
                pass  # the client gave up (the timeout test)

        def do_GET(self) -> None:
            state.hosts.append(self.headers.get("Host", ""))
            path = self.path
            if path == "/article":
                self.send(200, article_page(canonical="https://news.example.com/2020/08/beirut").encode())
            elif path.startswith("/same-site"):
                self.send(200, article_page(canonical=f"{state.base}/2020/08/beirut").encode())
            elif path == "/short":
                self.send(200, article_page(wrap="div").encode())
            elif path == "/old":
                self.send(200, article_page(charset="windows-1256").encode("cp1256"), "text/html")
            elif path == "/redirect":
                self.send(302, b"", headers={"Location": "/short"})
            elif path.startswith("/loop"):
                self.send(302, b"", headers={"Location": f"/loop{len(path)}"})
            elif path == "/to-ftp":
                self.send(302, b"", headers={"Location": "ftp://127.0.0.1/file.txt"})
            elif path == "/to-private":
                self.send(301, b"", headers={"Location": "http://10.255.255.1/secret"})
            elif path == "/home":
                self.send(200, NO_ARTICLE_PAGE.encode())
            elif path == "/plain":
                self.send(200, ARABIC_BODY.encode("utf-8"), "text/plain; charset=utf-8")
            elif path == "/declared-big":  # refused on its Content-Length, before the body is read
                self.send(200, b"<html>" + b" " * 100, length=5 * 1024 * 1024)
            elif path == "/pdf":
                self.send(200, b"%PDF-1.4 ...", "application/pdf")
            elif path == "/slow":
                time.sleep(2)
                self.send(200, article_page().encode())
            elif path.startswith("/huge"):  # no Content-Length: the cap must hold while streaming
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.end_headers()
                sent = 0
                try:
                    while sent < HUGE_BYTES:
                        self.wfile.write(b"<p>" + b"a" * 4093 + b"</p>")
                        sent += 4100
                except OSError:
                    pass
                state.huge_sent[path] = sent
            else:
                self.send(404, b"not here")

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    state.port = httpd.server_address[1]
    state.base = f"http://127.0.0.1:{state.port}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()


def test_url_article_is_identified_by_the_url_fetched_not_another_sites_canonical(server):
    url = f"{server.base}/article"  # its canonical URL is on news.example.com: not this site's to claim
    article = only_article(load(url))
    assert_main_text_only(article.text)
    assert article.id == article.url == url
    assert (article.origin, article.root) == (url, None)
    assert (article.title, article.lang, article.published) == ("انفجار بيروت", "ar", "2020-08-04")


def test_url_article_uses_a_canonical_url_on_the_same_site_as_id(server):
    article = only_article(load(f"{server.base}/same-site?utm_source=feed"))
    assert article.id == article.url == f"{server.base}/2020/08/beirut"


def test_short_page_after_a_redirect_is_identified_by_its_final_url(server):
    article = only_article(load(f"{server.base}/redirect"))
    assert article.id == article.url == f"{server.base}/short"
    assert_main_text_only(article.text)


def test_windows_1256_page(server):
    assert_main_text_only(only_article(load(f"{server.base}/old")).text)


def test_plain_text_url(server):
    article = only_article(load(f"{server.base}/plain"))
    assert article.id == f"{server.base}/plain"
    assert article.text == ARABIC_BODY and article.published == "2020-08-04"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize(("path", "error"), [
    ("/missing", "returned HTTP 404"),
    ("/loop", "redirected more than 5 times"),
    ("/to-ftp", "only http and https URLs can be fetched, not ftp"),
    ("/pdf", "is application/pdf, not an HTML or text page"),
    ("/home", "no article text found in the page"),
    ("/huge", "is larger than the 1 MB limit"),
    ("/declared-big", "is larger than the 1 MB limit"),
])
def test_url_failures(server, path, error):
    failure = only_failure(load(f"{server.base}{path}", settings=replace(LOCAL, max_file_mb=1)))
    assert failure.source == f"{server.base}{path}"
    assert error in failure.error


def test_huge_response_is_cut_off_while_streaming(server):
    with pytest.raises(FetchError, match="larger than the 1 MB limit"):
        fetch_url(f"{server.base}/huge?probe", replace(LOCAL, max_file_mb=1))
    deadline = time.monotonic() + 10
    while "/huge?probe" not in server.huge_sent and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.huge_sent["/huge?probe"] < HUGE_BYTES / 4  # we hung up long before the end


def test_slow_server_times_out(server):
    started = time.monotonic()
    failure = only_failure(load(f"{server.base}/slow", settings=replace(LOCAL, fetch_timeout=0.5)))
    assert failure.error == "could not reach 127.0.0.1: timed out"
    assert time.monotonic() - started < 2


def test_unreachable_port():
    failure = only_failure(load(f"http://127.0.0.1:{free_port()}/x"))
    assert failure.error == "could not reach 127.0.0.1: connection refused"


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]", "169.254.169.254", "10.0.0.7", "0.0.0.0"])
def test_private_addresses_are_refused(server, host):
    before = len(server.hosts)
    failure = only_failure(load(f"http://{host}:{server.port}/article", settings=Settings()))
    assert "private or local address" in failure.error
    assert "NEWSDESK_ALLOW_PRIVATE_URLS" in failure.error
    assert len(server.hosts) == before  # nothing was sent


@pytest.mark.parametrize(("address", "public"), [
    ("8.8.8.8", True), ("2001:4860:4860::8888", True),
    ("127.0.0.1", False), ("10.1.2.3", False), ("172.16.0.1", False), ("192.168.1.1", False),
    ("169.254.169.254", False), ("100.64.0.1", False), ("224.0.0.1", False), ("240.0.0.1", False),
    ("0.0.0.0", False), ("::1", False), ("fe80::1", False), ("fc00::1", False), ("::", False),
    ("::ffff:127.0.0.1", False), ("ff02::1", False),
])
def test_is_public_address(address, public):
    assert is_public_address(address) is public


@pytest.fixture
def loopback_counts_as_public(monkeypatch):
    """Pretend 127.0.0.1 is a public address and that news.test resolves to it, to exercise the checked path."""
    real = socket.getaddrinfo

    def fake_getaddrinfo(host, *args, **kwargs):
        return real("127.0.0.1" if host == "news.test" else host, *args, **kwargs)

    monkeypatch.setattr(fetch, "is_public_address", lambda address: address == "127.0.0.1")
    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)


def test_checked_address_is_used_with_the_real_host_name(server, loopback_counts_as_public):
    article = only_article(load(f"http://news.test:{server.port}/redirect", settings=Settings()))
    assert article.id == f"http://news.test:{server.port}/short"
    assert server.hosts[-2:] == [f"news.test:{server.port}"] * 2  # both hops, with the name, not the IP


def test_every_redirect_hop_is_checked(server, loopback_counts_as_public):
    failure = only_failure(load(f"{server.base}/to-private", settings=Settings()))
    assert failure.error.startswith("refusing to fetch 10.255.255.1")


def test_fetch_url_refuses_other_schemes():
    with pytest.raises(FetchError, match="only http and https"):
        fetch_url("file:///etc/passwd", LOCAL)
