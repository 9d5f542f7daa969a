"""RSS and Atom feeds (issue #18): ``newsdesk index FEED_URL``, ``newsdesk feeds``, ``newsdesk watch`` and the bot's
background poll and ``/feeds``, against feeds and article pages served from 127.0.0.1 (``tests/feed_server.py``),
with the real CLI, real Chroma and real encoders."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest

from newsdesk.bot.engine import Engine
from newsdesk.index.feeds import FeedList, parse_feed
from tests.conftest import NEWSDESK, clean_env, run_cli
from tests.feed_server import FeedSite, Route, Story
from tests.fake_telegram import FakeTelegram
from tests.test_telegram import ADMIN, ask, bot_settings, plain, running, until

PRIVATE_OK = {"NEWSDESK_ALLOW_PRIVATE_URLS": "1"}

# distinct stories (a near-duplicate of another would be folded into its group by index.dedup)
TOPICS = [
    ("Oxygen found in the deep lake", "Scientists measured dissolved oxygen at the bottom of Lake Vostra.",
     "The divers lowered sensors to ninety metres and logged readings every hour for a week."),
    ("Harbour bridge reopens after repairs", "Engineers replaced forty steel cables on the old harbour bridge.",
     "Traffic returned on Tuesday morning, and the toll was waived for the first month."),
    ("Orchestra plays in the salt mine", "A chamber orchestra performed two hundred metres underground.",
     "The acoustics of the carved hall surprised the violinists, who tuned twice during the concert."),
    ("Farmers test drought-proof millet", "Growers in the valley planted a millet variety bred for dry summers.",
     "Agronomists will weigh the harvest in October against the yields of ordinary seed."),
    ("Library returns a book after 90 years", "A borrower's grandson returned an atlas due back in 1934.",
     "The librarians waived the fine and put the atlas on display beside the original loan card."),
    ("Ferry service to the islands resumes", "The island ferry sailed again after a winter of storms.",
     "Fishermen welcomed the first crossing, which carried mail, diesel and a new school teacher."),
]


def story(n: int, date: str | None = None) -> Story:
    title, lead, detail = TOPICS[n]
    return Story(guid=f"story-{n}", title=title, path=f"/news/{n}", date=date or f"Mon, {21 + n} Sep 2020 10:00:00 GMT",
                 summary=f"{lead} {detail}")


def atom_story(n: int) -> Story:
    return story(n, date=f"2020-09-{21 + n}T10:00:00Z")


def newsdesk(*args: str, home, status: int = 0):
    proc = run_cli(*args, home=home, env=PRIVATE_OK)
    assert proc.returncode == status, (proc.returncode, proc.stdout, proc.stderr)
    return proc


def listed(home) -> dict[str, dict]:
    return {row["id"]: row for row in json.loads(newsdesk("list", "--json", home=home).stdout)}


def best_hit(home, query: str) -> dict:
    return json.loads(newsdesk("search", query, "--k", "1", "--json", home=home).stdout)["hits"][0]


@pytest.fixture
def site() -> Iterator[FeedSite]:
    with FeedSite() as server:
        yield server


# ---------------------------------------------------------------- newsdesk index FEED_URL


def test_index_feed_url_indexes_each_item_with_the_feeds_title_outlet_date_and_link(site, tmp_path):
    home = tmp_path / "home"
    stories = [story(n) for n in range(3)]
    site.page(stories[0])
    site.page(stories[1])  # the third item's page is missing (404): the feed's own text is indexed
    site.rss("/rss", "Lake Times", stories)
    report = json.loads(newsdesk("index", site.url("/rss"), "--fast", "--json", home=home).stdout)
    assert (report["added"], report["failed"]) == (3, [])

    articles = listed(home)
    assert sorted(articles) == sorted(site.url(s.path) for s in stories)  # the item's link is its id
    for s in stories:
        row = articles[site.url(s.path)]
        assert (row["title"], row["source"], row["url"]) == (s.title, "Lake Times", site.url(s.path))
        assert row["published"] == f"2020-09-{21 + int(s.guid[-1])}"
    page_hit = best_hit(home, "Which report gives the details the summary leaves out about oxygen sensors?")
    assert page_hit["article_id"] == site.url("/news/0") and "Paragraph" in page_hit["text"]  # the page's text
    fallback = best_hit(home, "Which orchestra performed underground in a salt mine?")
    assert fallback["article_id"] == site.url("/news/2")
    assert stories[2].summary in fallback["text"] and "Paragraph" not in fallback["text"]  # the item's text


def test_a_malformed_feed_is_one_line_and_what_was_indexed_stays(site, tmp_path):
    home = tmp_path / "home"
    stories = [story(n) for n in range(2)]
    for s in stories:
        site.page(s)
    site.rss("/rss", "Lake Times", stories)
    newsdesk("index", site.url("/rss"), "--fast", home=home)
    before = listed(home)

    good = site.routes["/rss"].body
    site.routes["/rss"] = Route(good[:len(good) // 2], "application/rss+xml")  # cut in the middle of an item
    proc = newsdesk("index", site.url("/rss"), "--fast", home=home, status=1)
    assert proc.stderr.splitlines() == [f"newsdesk: error: the feed at {site.url('/rss')} is malformed "
                                        f"(not well-formed XML at line 1)"]
    assert listed(home) == before

    site.routes["/rss"] = Route(b"<?xml version='1.0'?><catalog><book>Not news</book></catalog>", "text/xml")
    proc = newsdesk("index", site.url("/rss"), "--fast", home=home, status=1)
    assert proc.stderr == f"newsdesk: error: {site.url('/rss')} is not an RSS, Atom or RDF feed\n"


def test_rdf_items_are_known_by_their_link_and_an_item_without_one_by_the_feed_and_its_guid():
    rdf = b"""<?xml version="1.0"?>
<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns="http://purl.org/rss/1.0/"
         xmlns:dc="http://purl.org/dc/elements/1.1/">
  <channel rdf:about="https://example.org/"><title>Desk Wire</title><link>https://example.org/</link></channel>
  <item rdf:about="https://example.org/a"><title>Ferry resumes</title><link>https://example.org/a</link>
    <description>&lt;p&gt;The ferry sailed again.&lt;/p&gt;&lt;p&gt;Mail &amp;amp; diesel came too.&lt;/p&gt;
    </description>
    <dc:date>2020-10-10T08:00:00Z</dc:date></item>
</rdf:RDF>"""
    feed = parse_feed(rdf, "https://example.org/rdf")
    assert feed.title == "Desk Wire"
    [item] = feed.items
    assert (item.key, item.article_id, item.title, item.published) == (
        "https://example.org/a", "https://example.org/a", "Ferry resumes", "2020-10-10")
    assert item.content == "The ferry sailed again.\n\nMail & diesel came too."

    atom = (b"<feed xmlns='http://www.w3.org/2005/Atom'><title>Wire</title><entry><id>urn:wire:7</id>"
            b"<title>No link</title><updated>Sometime in autumn</updated><content type='html'>Text only.</content>"
            b"</entry></feed>")
    [item] = parse_feed(atom, "https://example.org/atom").items
    assert (item.key, item.article_id, item.link) == ("urn:wire:7", "https://example.org/atom#urn:wire:7", None)
    assert item.published == "Sometime in autumn"  # not understood: kept as text


# ---------------------------------------------------------------- the feed list


def test_feeds_add_list_remove_keep_a_small_json_file_under_the_home(site, tmp_path):
    home = tmp_path / "home"
    rss, atom = site.url("/rss"), site.url("/atom")
    assert newsdesk("feeds", "add", rss, atom, home=home).stdout.splitlines()[:2] == [f"added: {rss}",
                                                                                     f"added: {atom}"]
    assert newsdesk("feeds", "add", rss, home=home).stdout.startswith(f"already listed: {rss}")
    rows = json.loads(newsdesk("feeds", "list", "--json", home=home).stdout)
    assert [r["url"] for r in rows] == [rss, atom] and all(r["failures"] == 0 for r in rows)
    assert newsdesk("feeds", home=home).stdout.startswith(f"{rss} — 0 items; last polled never")

    for bad, error in [("ftp://example.org/rss", "not an http(s) feed URL: 'ftp://example.org/rss'"),
                       ("https://reader:s3cret@example.org/rss", "a feed URL with a user name and password "
                                                                 "cannot be kept in the feed list")]:
        proc = newsdesk("feeds", "add", bad, home=home, status=1)
        assert proc.stderr.startswith(f"newsdesk: error: {error}") and len(proc.stderr.splitlines()) == 1
    assert "s3cret" not in (home / "feeds.json").read_text()

    assert newsdesk("feeds", "remove", atom, home=home).stdout.startswith(f"removed: {atom}")
    assert newsdesk("feeds", "remove", atom, home=home, status=1).stdout.startswith(f"not listed: {atom}")
    assert list(json.loads((home / "feeds.json").read_text())["feeds"]) == [rss]
    assert sorted(p.name for p in home.iterdir()) == ["feeds.json", "feeds.lock"]  # no temporary file left

    (home / "feeds.json").write_text('{"feeds": [')
    proc = newsdesk("feeds", home=home, status=1)
    assert proc.stderr == (f"newsdesk: error: the feed list {home / 'feeds.json'} is damaged: repair it, or delete "
                           f"it and add the feeds again\n")


# ---------------------------------------------------------------- newsdesk watch


@pytest.mark.slow
def test_watch_indexes_only_new_and_changed_items_with_conditional_gets(site, tmp_path):
    home = tmp_path / "home"
    rss_stories = [story(n) for n in range(3)]
    atom_stories = [atom_story(n) for n in (3, 4)]
    for s in rss_stories + atom_stories:
        site.page(s)
    site.rss("/rss", "Lake Times", rss_stories)  # validators: ETag and Last-Modified
    site.atom("/atom", "Valley Post", atom_stories, etag=False)  # Last-Modified only
    rss, atom = site.url("/rss"), site.url("/atom")
    newsdesk("feeds", "add", rss, atom, home=home)

    polled = newsdesk("watch", "--once", "--fast", "--json", home=home).stdout
    first = [json.loads(line) for line in polled.splitlines()]
    assert [(r["feed"], r["outcome"], r["added"], r["failed"]) for r in first] == [(rss, "indexed", 3, []),
                                                                                 (atom, "indexed", 2, [])]
    assert listed(home)[site.url("/news/3")]["source"] == "Valley Post"

    # a second poll: nothing changed, both feeds answered 304 to conditional GETs, no page fetched
    seen = len(site.requests)
    assert newsdesk("watch", "--once", "--fast", home=home).stdout.splitlines() == [f"{rss}: not modified",
                                                                                   f"{atom}: not modified"]
    second = site.requests[seen:]
    assert [(r.path, r.status) for r in second] == [("/rss", 304), ("/atom", 304)]
    assert second[0].if_none_match == site.routes["/rss"].tag
    assert second[1].if_modified_since == site.routes["/atom"].last_modified and second[1].if_none_match is None

    # a new item: one page fetched, 1 added
    site.page(story(5))
    site.rss("/rss", "Lake Times", [story(5), *rss_stories])
    seen = len(site.requests)
    out = newsdesk("watch", "--once", "--fast", home=home).stdout.splitlines()
    assert out == [f"{rss}: 1 added, 0 updated, 3 unchanged, 0 removed, 0 failed", f"{atom}: not modified"]
    assert [r.path for r in site.requests[seen:]] == ["/rss", "/news/5", "/atom"]

    # a changed item (another headline) is updated; an item that left the feed stays indexed…
    retitled = story(1)
    retitled.title = "Harbour bridge reopens to traffic"
    site.rss("/rss", "Lake Times", [story(5), story(0), retitled])
    out = newsdesk("watch", "--once", "--fast", home=home).stdout.splitlines()
    assert out[0] == f"{rss}: 0 added, 1 updated, 2 unchanged, 0 removed, 0 failed"
    articles = listed(home)
    assert articles[site.url("/news/1")]["title"] == "Harbour bridge reopens to traffic"
    assert site.url("/news/2") in articles

    # …unless the watch prunes (the feed did not change since: 304, and the item that left is removed)
    out = newsdesk("watch", "--once", "--fast", "--prune", home=home).stdout.splitlines()
    assert out == [f"{rss}: not modified; 1 removed", f"{atom}: not modified"]
    assert site.url("/news/2") not in listed(home)
    assert len(listed(home)) == 5


@pytest.mark.slow
def test_a_broken_feed_is_reported_retried_later_and_never_blocks_the_other(site, tmp_path):
    home = tmp_path / "home"
    site.routes["/broken"] = Route(b"", status=500)
    stories = [story(n) for n in range(2)]
    for s in stories:
        site.page(s)
    site.rss("/rss", "Lake Times", stories)
    broken, rss = site.url("/broken"), site.url("/rss")
    newsdesk("feeds", "add", broken, rss, home=home)

    out = newsdesk("watch", "--once", "--fast", "--interval", "60", home=home, status=2).stdout.splitlines()
    assert out[0].startswith(f"{broken}: failed: {broken} returned HTTP 500 (1 in a row; next try ")
    assert out[1] == f"{rss}: 2 added, 0 updated, 0 unchanged, 0 removed, 0 failed"
    stats = newsdesk("stats", home=home).stdout
    assert "feeds: 2 listed, 1 failing" in stats
    assert f"  failing: {broken}: {broken} returned HTTP 500 (1 failed poll(s) in a row, last at " in stats

    # the second failure in a row waits one interval: the third run does not ask the server
    newsdesk("watch", "--once", "--fast", "--interval", "60", home=home, status=2)
    asked = len(site.requests_for("/broken"))
    out = newsdesk("watch", "--once", "--fast", "--interval", "60", home=home, status=2).stdout.splitlines()
    assert out[0].startswith(f"{broken}: still failing, not tried now: {broken} returned HTTP 500 (2 in a row")
    assert out[1] == f"{rss}: not modified"
    assert len(site.requests_for("/broken")) == asked == 2
    row = next(r for r in json.loads(newsdesk("stats", "--json", home=home).stdout)["feeds"] if r["url"] == broken)
    assert row["failures"] == 2 and row["retry_at"] > row["last_error_at"] + 59

    # repaired: the next due poll indexes it and clears the failures
    FeedList(home).record(broken, {"retry_at": None})
    site.rss("/broken", "Harbour News", [story(2)])
    site.page(story(2))
    out = newsdesk("watch", "--once", "--fast", home=home).stdout.splitlines()
    assert out[0] == f"{broken}: 1 added, 0 updated, 0 unchanged, 0 removed, 0 failed"
    assert "feeds: 2 listed, 0 failing" in newsdesk("stats", home=home).stdout


@pytest.mark.parametrize(("sig", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 0)], ids=["SIGINT", "SIGTERM"])
def test_watch_stops_cleanly_on_a_signal_after_its_round(site, tmp_path, sig, status):
    home = tmp_path / "home"
    site.page(story(0))
    site.rss("/rss", "Lake Times", [story(0)])
    newsdesk("feeds", "add", site.url("/rss"), home=home)

    def signal_after_the_first_round() -> None:
        deadline = time.monotonic() + 60
        while not (FeedList(home).load()[site.url("/rss")].get("last_ok")) and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), sig)  # to this process, where `newsdesk watch` runs (``run_cli``)

    threading.Thread(target=signal_after_the_first_round, daemon=True).start()
    started = time.monotonic()
    proc = run_cli("watch", "--interval", "600", "--fast", home=home, env=PRIVATE_OK)
    assert time.monotonic() - started < 60
    assert (proc.returncode, proc.stderr) == (status, "newsdesk: watch stopped\n")
    assert proc.stdout == f"{site.url('/rss')}: 1 added, 0 updated, 0 unchanged, 0 removed, 0 failed\n"


@pytest.mark.slow
def test_the_watch_process_stops_cleanly_on_sigterm(site, tmp_path):
    home = tmp_path / "home"
    site.page(story(0))
    site.rss("/rss", "Lake Times", [story(0)])
    newsdesk("feeds", "add", site.url("/rss"), home=home)
    proc = subprocess.Popen([*NEWSDESK, "watch", "--interval", "30", "--fast"], cwd=tmp_path,
                            env=clean_env(home, **PRIVATE_OK), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().startswith(site.url("/rss") + ": 1 added")  # its first round is done
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)  # while it waits for the next round
        _out, err = proc.communicate(timeout=15)
        assert proc.returncode == 0 and time.monotonic() - started < 5
        assert err.splitlines()[-1] == "newsdesk: watch stopped" and "Traceback" not in err
    finally:
        if proc.poll() is None:
            proc.kill()


# ---------------------------------------------------------------- the bot


@pytest.fixture
def tg() -> Iterator[FakeTelegram]:
    with FakeTelegram() as fake:
        yield fake


@pytest.mark.slow
async def test_the_bot_polls_the_feeds_in_the_background_and_admins_manage_them(site, tg, tmp_path):
    home = tmp_path / "home"
    site.page(story(0))
    site.rss("/rss", "Lake Times", [story(0)])
    rss = site.url("/rss")
    FeedList(home).add(rss)
    interval = 2.0
    settings = bot_settings(home, tg, telegram_admin_ids=frozenset({ADMIN}), allow_private_urls=True,
                            feed_interval=interval)
    engine = Engine(settings)

    def indexed() -> set[str]:
        return {row["id"] for row in engine.index.list_articles()}

    async def until_indexed(url: str, timeout: float) -> float:
        started = time.monotonic()
        while url not in await asyncio.to_thread(indexed):
            assert time.monotonic() - started < timeout, f"{url} not indexed after {timeout} s"
            await asyncio.sleep(0.1)
        return time.monotonic() - started

    async with running(settings, engine):
        await until_indexed(site.url("/news/0"), 30)  # the first poll, soon after start
        site.page(story(1))
        site.rss("/rss", "Lake Times", [story(1), story(0)])
        waited = await until_indexed(site.url("/news/1"), 30)
        assert waited < interval + 3, f"the new item took {waited:.1f} s with a {interval} s poll interval"
        await until(lambda: len(FeedList(home).load()[rss]["items"]) == 2, 10)  # the poll recorded it

        other = site.url("/atom")
        assert plain((await ask(tg, 7, f"/feeds add {other}"))["text"]) == \
            "Sorry, only the bot's admins can add or re-index articles."
        assert [f for f in FeedList(home).load()] == [rss]
        listing = plain((await ask(tg, ADMIN, "/feeds"))["text"])
        assert listing == f"Feeds, polled every 2 s:\n• {rss} — Lake Times (2 items)"
        assert plain((await ask(tg, ADMIN, f"/feeds add {other}"))["text"]) == \
            f"Added {other}: its items are being indexed."
        assert plain((await ask(tg, ADMIN, f"/feeds remove {other}"))["text"]) == \
            f"Removed {other} from the feeds (its articles stay indexed)."
        assert "Usage: /feeds" in plain((await ask(tg, ADMIN, "/feeds add ftp://x"))["text"])
    assert list(FeedList(home).load()) == [rss]
