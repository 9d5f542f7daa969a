"""Dates and outlets (issue #18): English datelines, an unparseable date kept as text, ``--since``/``--until``/
``--source`` in ``ask`` and ``search``, the phrases of a question ("yesterday", "أمس", "source:Sputnik"…) in the
CLI and through the bot, "latest" questions, the filter applied inside the store query (embedded and a
``chroma run`` server), and an index written before the filter keys existed, upgraded in place."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from newsdesk.bot.engine import Engine
from newsdesk.index.chunking import chunk_article
from newsdesk.index.dates import Filters, parse_question
from newsdesk.index.loaders import article_from_text, load_sources
from newsdesk.index.store import Store
from newsdesk.index.types import Article
from tests.conftest import EXAMPLE, make_settings, run_cli
from tests.fake_telegram import FakeTelegram
from tests.test_telegram import ask as tg_ask, bot_settings, quotes, running

# seven short articles: four outlets, 2 to 10 October 2020, English and Arabic, datelines of every kind
ARTICLES = {
    "moscow-talks.txt": "Ceasefire agreed at Moscow talks\n\nMOSCOW, 10 October 2020 (Desk Wire) - The foreign "
                        "ministers of Armenia and Azerbaijan agreed on a humanitarian ceasefire after ten hours of "
                        "talks in Moscow. The Russian foreign minister said the truce would allow the exchange of "
                        "prisoners and of the bodies of the dead.\n",
    "sputnik-shelling.txt": "Stepanakert shelled overnight, Armenian officials say\n\n(Sputnik - 9 October 2020) "
                            "Armenian officials said Stepanakert was shelled overnight and that several houses were "
                            "destroyed. They said the talks planned in Moscow were the only hope for the civilians "
                            "who stayed in the city.\n",
    "reuters-villages.txt": "Azerbaijan says its forces captured villages\n\nOct. 2, 2020\n\nWASHINGTON (Reuters) - "
                            "Azerbaijan's president said his forces had captured several villages near the front "
                            "line. The State Department urged both sides to stop the fighting and to return to "
                            "negotiations.\n",
    "tass-prisoners.txt": "Both sides ready for a prisoner exchange\n\nMOSCOW, 7 October 2020 (TASS) - Both sides "
                          "said they were ready to exchange prisoners of war under the mediation of the "
                          "International Committee of the Red Cross.\n",
    "afp-prisoners.txt": "Red Cross prepares prisoner swap\n\nGENEVA, 5 October 2020 (AFP) - The International "
                         "Committee of the Red Cross said it was preparing to oversee a swap of prisoners of war "
                         "between the two sides.\n",
    "ar-truce.txt": "هدنة إنسانية في قره باغ بعد محادثات موسكو\n\n(موسكو / سبوتنيك - 10 أكتوبر 2020) أعلن وزير "
                    "الخارجية الروسي أن أرمينيا وأذربيجان اتفقتا على هدنة إنسانية بعد محادثات استمرت عشر ساعات في "
                    "موسكو. وقال إن الهدنة ستسمح بتبادل الأسرى وجثث القتلى.\n",
    "ar-shelling.txt": "قصف على ستيباناكيرت قبل المحادثات\n\n(يريفان / سبوتنيك - ٨ أكتوبر ٢٠٢٠م) قال مسؤولون أرمن إن "
                       "مدينة ستيباناكيرت تعرضت لقصف ليلي دمر عددا من المنازل. وأضافوا أن الدعوة إلى هدنة إنسانية لم "
                       "تلق ردا حتى الآن.\n",
}
PUBLISHED = {"moscow-talks": "2020-10-10", "sputnik-shelling": "2020-10-09", "reuters-villages": "2020-10-02",
             "tass-prisoners": "2020-10-07", "afp-prisoners": "2020-10-05", "ar-truce": "2020-10-10",
             "ar-shelling": "2020-10-08"}
SOURCES = {"moscow-talks": "Desk Wire", "sputnik-shelling": "Sputnik", "reuters-villages": "Reuters",
           "tass-prisoners": "TASS", "afp-prisoners": "AFP", "ar-truce": "سبوتنيك", "ar-shelling": "سبوتنيك"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("dated") / "articles"
    folder.mkdir()
    for name, text in ARTICLES.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def dated_index(corpus, tmp_path_factory) -> Path:
    """A home with the seven articles indexed, both stages (read only: copy it to write)."""
    home = tmp_path_factory.mktemp("dated-home") / "home"
    run_cli("index", str(corpus), home=home, check=True)
    return home


def cli_json(*args: str, home: Path) -> dict:
    proc = run_cli(*args, "--json", home=home)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def hit_ids(*args: str, home: Path) -> list[str]:
    return [h["article_id"] for h in cli_json("search", *args, home=home)["hits"]]


def cited(*args: str, home: Path) -> tuple[set[str], dict]:
    answer = cli_json("ask", *args, home=home)
    return {c["article_id"] for c in answer["citations"]}, answer


# -- dates in articles --------------------------------------------------------------------------------------

def test_english_datelines_give_the_outlet_and_the_date():
    def read(body: str) -> tuple[str | None, str | None]:
        a = article_from_text(f"A headline\n\n{body}", "x")
        return a.source, a.published

    assert read("MOSCOW, 10 October 2020 (Desk Wire) - Russia said.") == ("Desk Wire", "2020-10-10")
    assert read("KYIV/MOSCOW, Oct. 9, 2020 (AP) — Both sides said.") == ("AP", "2020-10-09")
    # the dateline has no date (or no year): the date line near the top gives it
    assert read("Oct. 2, 2020\n\nWASHINGTON (Reuters) - The president said.") == ("Reuters", "2020-10-02")
    assert read("By Jane Doe | Updated October 10th, 2020 09:14 GMT\n\nPARIS, Oct 10 (AFP) - Text.") == (
        "AFP", "2020-10-10")
    assert read("Published Oct. 10, 2020\n\nText without a dateline.") == (None, "2020-10-10")
    # not datelines: a place not in capitals, a date inside a paragraph, a date in the headline
    assert read("Washington (Reuters) - lower case.") == (None, None)
    assert read("The ministry said on 10 October 2020 that the talks would go on for as long as both sides "
                "wished to talk.") == (None, None)
    assert article_from_text("Talks on Oct. 10, 2020\n\nNo date here.", "x").published is None
    # the Arabic forms of before still work
    example = load_sources([str(EXAMPLE)], make_settings(Path("/nonexistent"))).articles[0]
    assert (example.source, example.published) == ("سبوتنيك", "2020-09-28")
    assert read("(يريفان / سبوتنيك - ٨ أيلول/سبتمبر ٢٠٢٠م) نص.") == ("سبوتنيك", "2020-09-08")


def test_the_indexed_articles_list_their_outlet_and_date(dated_index):
    rows = {row["id"]: row for row in cli_json("list", home=dated_index)}
    assert {a: (r["source"], r["published"]) for a, r in rows.items()} == {
        a: (SOURCES[a], PUBLISHED[a]) for a in PUBLISHED}


def test_an_unparseable_date_is_kept_as_text_with_a_warning(tmp_path):
    folder = tmp_path / "articles"
    folder.mkdir()
    (folder / "flood.txt").write_text("---\npublished: the week after the flood\nsource: Town Crier\n---\n"
                                      "Bridge reopens\n\nThe council reopened the bridge over the river on Monday.\n",
                                      encoding="utf-8")
    (folder / "rss.json").write_text(json.dumps({"id": "rss", "title": "Market opens", "published":
                                                 "Sat, 10 Oct 2020 08:00:00 GMT", "text": "The market opened."}))
    home = tmp_path / "home"
    proc = run_cli("index", str(folder), "--fast", home=home)
    assert proc.returncode == 0, proc.stderr
    assert "flood.txt: the published date 'the week after the flood' is not understood; kept as text" in proc.stderr
    rows = {r["id"]: r for r in cli_json("list", home=home)}
    assert rows["flood"]["published"] == "the week after the flood" and rows["rss"]["published"] == "2020-10-10"
    assert hit_ids("bridge over the river", home=home)[0] == "flood"
    assert "flood" not in hit_ids("bridge over the river", "--since", "1900-01-01", home=home)
    shown = run_cli("ask", "When did the council reopen the bridge?", home=home)
    assert "Bridge reopens — Town Crier, the week after the flood" in shown.stdout


# -- filters on the command line ----------------------------------------------------------------------------

def test_since_until_and_source_change_which_articles_search_returns(dated_index):
    home = dated_index
    assert hit_ids("talks in Moscow", home=home)[0] == "moscow-talks"
    before = hit_ids("talks in Moscow", "--until", "2020-10-09", home=home)
    assert before and all(PUBLISHED[a] <= "2020-10-09" for a in before)
    window = hit_ids("talks in Moscow", "--since", "2020-10-08", "--until", "Oct 9, 2020", home=home)
    assert set(window) == {"sputnik-shelling", "ar-shelling"}
    # "Stepanakert" is a word of the Sputnik articles only: the lexical ranker is restricted too
    assert hit_ids("Stepanakert shelled", "--source", "reuters", home=home) == ["reuters-villages"]
    assert hit_ids("Stepanakert shelled", "--source", "DESK WIRE", home=home) == ["moscow-talks"]
    assert set(hit_ids("Stepanakert", "--source", "سبوتنيك", home=home)) == {"ar-truce", "ar-shelling"}
    shown = run_cli("search", "Stepanakert", "--source", "Nobody", home=home)
    assert shown.returncode == 0 and shown.stdout.strip() == "No indexed article matches: from Nobody."


def test_since_until_and_source_change_which_articles_ask_cites(dated_index):
    home = dated_index
    question = "What did the foreign minister say about the humanitarian ceasefire?"
    ids, _ = cited(question, home=home)
    assert ids & {"moscow-talks", "ar-truce"}
    ids, answer = cited(question, "--until", "2020-10-09", home=home)
    assert ids and all(PUBLISHED[a] <= "2020-10-09" for a in ids)
    assert answer["notice"] == "Only articles until 9 Oct 2020."
    ids, answer = cited(question, "--source", "Reuters", home=home)
    assert ids == {"reuters-villages"} and answer["notice"] == "Only articles from Reuters."
    shown = run_cli("ask", question, "--source", "reuters", home=home)  # the date of each cited article
    assert "[1] Azerbaijan says its forces captured villages — Reuters, 2020-10-02" in shown.stdout
    for bad, says in ((("--since", "someday"), "--since: 'someday' is not a date"),
                      (("--since", "2020-10-10", "--until", "2020-10-01"), "--since 2020-10-10 is after --until")):
        proc = run_cli("ask", question, *bad, home=home)
        assert proc.returncode == 1 and proc.stdout == ""
        assert proc.stderr.startswith(f"newsdesk: error: {says}") and len(proc.stderr.splitlines()) == 1


# -- phrases in questions -----------------------------------------------------------------------------------

def test_phrases_in_english_and_arabic_questions(dated_index):
    home = dated_index
    ids, answer = cited("What happened to Stepanakert yesterday?", "--now", "2020-10-10T07:00:00", home=home)
    assert ids == {"sputnik-shelling"} and answer["notice"] == "Only articles of 9 Oct 2020."
    truce = "ماذا قيل أمس عن الهدنة الإنسانية؟"
    ids, answer = cited(truce, "--now", "2020-10-11", home=home)
    assert ids and ids <= {"ar-truce", "moscow-talks"} and answer["notice"] == "المقالات بتاريخ 10 أكتوبر 2020 فقط."
    ids, _ = cited(truce, "--now", "2020-10-09", home=home)
    assert ids == {"ar-shelling"}
    ids, answer = cited("source:Sputnik What did officials say about the talks in Moscow?", home=home)
    assert ids == {"sputnik-shelling"} and answer["question"].startswith("source:Sputnik")
    assert hit_ids('source:"desk wire" prisoners', home=home) == ["moscow-talks"]
    assert set(hit_ids("since:2020-10-09 talks in Moscow", home=home)) == {"moscow-talks", "sputnik-shelling",
                                                                          "ar-truce"}
    shown = run_cli("ask", "What happened on 28 September?", "--now", "2020-10-10", home=home)
    assert "No indexed article matches: of 28 Sep 2020." in shown.stdout
    assert hit_ids("ماذا حدث في ستيباناكيرت في 8 أكتوبر؟", "--now", "2020-10-10", home=home) == ["ar-shelling"]


def test_latest_questions_prefer_recent_articles(dated_index):
    # two articles about as good: the older one first, unless the question asks for the latest
    assert hit_ids("prisoners of war and the Red Cross", home=dated_index)[:2] == ["afp-prisoners", "tass-prisoners"]
    assert hit_ids("latest on prisoners of war and the Red Cross", home=dated_index)[:2] == ["tass-prisoners",
                                                                                            "afp-prisoners"]


def test_question_phrases_relative_to_today():
    today = dt.date(2020, 10, 10)

    def period(question: str) -> tuple:
        f = parse_question(question, today).filters
        return f.since and f.since.isoformat(), f.until and f.until.isoformat(), f.source, f.latest

    assert period("what did they say last week?") == ("2020-10-03", "2020-10-10", None, False)
    assert period("news this month") == ("2020-10-01", "2020-10-10", None, False)
    assert period("ماذا قالوا الأسبوع الماضي؟") == ("2020-10-03", "2020-10-10", None, False)
    assert period("on October 28") == ("2019-10-28", "2019-10-28", None, False)  # the last one not after today
    assert period("since 1 October, until:2020-10-05") == ("2020-10-01", "2020-10-05", None, False)
    assert period("Qu'a dit le ministre hier ?") == ("2020-10-09", "2020-10-09", None, False)
    assert period("Was ist hier passiert?") == (None, None, None, False)  # German "hier" is "here"
    # when the event happened, not a publication date: a year or month alone, "even today"
    assert period("Who did the Broncos beat in 2015?") == (None, None, None, False)
    assert period("What storm hit Jacksonville in May of 2012?") == (None, None, None, False)
    assert period("Whose wall is visible even today?") == (None, None, None, False)
    assert period("date:2015 Broncos") == ("2015-01-01", "2015-12-31", None, False)
    assert period("¿Qué pasó el 28 de septiembre?") == ("2020-09-28", "2020-09-28", None, False)
    assert period("Was geschah am 28. September?") == ("2020-09-28", "2020-09-28", None, False)
    assert period("Что произошло вчера?") == ("2020-10-09", "2020-10-09", None, False)
    assert period("source:«Desk Wire» ما آخر الأخبار؟") == (None, None, "Desk Wire", True)
    asked = parse_question("since:someday  source:TASS talks", today)
    assert asked.text == "talks" and asked.ignored == ["someday"] and asked.filters.source == "TASS"


# -- in the store query, embedded and through a server ------------------------------------------------------

def _filtered_store_queries(store: Store) -> None:
    """Two articles: the passage nearest the query is the old one's; a date or outlet filter gets the other
    one from a query for a single passage, so the filter is in the query, not applied to its results."""
    near = Article("near", "Near", "Near\n\nThe council met on Monday to discuss the bridge.", source="Old Gazette",
                   published="2020-09-01")
    far = Article("far", "Far", "Far\n\nThe council met on Tuesday to discuss the school.", source="New Herald",
                  published="2020-10-10")
    query = np.array([1.0, 0.0, 0.0, 0.0], dtype=np.float32)
    items = []
    for a, vector in ((near, [1.0, 0.05, 0.0, 0.0]), (far, [0.1, 1.0, 0.0, 0.0])):
        chunks = chunk_article(a.id, a.text)
        items.append((a, chunks, np.tile(np.asarray(vector, dtype=np.float32), (len(chunks), 1))))
    store.write_articles(items, "test-embedder", 4)
    passages = store.get_passages([cid for cid, _ in store.query_passages(query, 10)])
    store.add_accurate(list(passages.values()), np.stack([items[0][2][0], items[1][2][0]])[[
        0 if p.article_id == "near" else 1 for p in passages.values()]], "test-accurate")
    owner = {cid: p.article_id for cid, p in passages.items()}
    for where_of in (Filters(since=dt.date(2020, 10, 1)), Filters(source="NEW herald"),
                     Filters(until=dt.date(2020, 10, 31), source="new herald")):
        where = where_of.where()
        assert [owner[c] for c, _ in store.query_passages(query, 1)] == ["near"]
        assert [owner[c] for c, _ in store.query_passages(query, 1, where)] == ["far"]
        assert [owner[c] for c, _ in store.query_accurate(query, 1, where)] == ["far"]
        assert store.matching_articles(where) == {"far"}
    assert store.query_passages(query, 5, Filters(source="Nobody").where()) == []


def test_the_filter_is_applied_in_the_embedded_store_query(tmp_path):
    _filtered_store_queries(Store(make_settings(tmp_path / "home")))


@pytest.mark.slow
def test_the_filter_is_applied_in_the_server_store_query(tmp_path, chroma_server):
    host, port = chroma_server
    _filtered_store_queries(Store(make_settings(tmp_path / "home", chroma_host=host, chroma_port=port)))


# -- an index written before the filter keys -----------------------------------------------------------------

def test_an_older_index_gets_the_filter_keys_in_place(dated_index, corpus, tmp_path):
    home = tmp_path / "home"
    shutil.copytree(dated_index, home)
    before = {h["chunk_id"] for h in cli_json("search", "talks in Moscow", "--k", "7", home=home)["hits"]}
    store = Store(make_settings(home))  # as the previous store format wrote it: no date or outlet keys
    for kind in ("articles", "passages", "accurate"):
        col = store._collection(kind, create=False)
        ids = col.get(include=[])["ids"]
        col.update(ids=ids, metadatas=[{"published_ts": None, "source_key": None,
                                        **({"format": 2} if kind == "articles" else {})} for _ in ids])
    store.close()
    assert hit_ids("talks in Moscow", "--since", "2020-10-09", home=home) == []  # no filter matches them yet
    assert len(hit_ids("talks in Moscow", home=home)) == 5  # …and they are searched as before

    report = cli_json("index", str(corpus), home=home)
    assert (report["unchanged"], report["added"], report["updated"], report["chunks"]) == (7, 0, 0, 0)
    assert set(hit_ids("talks in Moscow", "--since", "2020-10-09", home=home)) == {"moscow-talks",
                                                                                  "sputnik-shelling", "ar-truce"}
    after = {h["chunk_id"] for h in cli_json("search", "talks in Moscow", "--k", "7", home=home)["hits"]}
    assert after == before  # the same passages: nothing was embedded again


# -- the bot ---------------------------------------------------------------------------------------------------

@pytest.fixture
def tg():
    with FakeTelegram() as fake:
        yield fake


async def test_the_bot_understands_dates_and_outlets_in_english_and_arabic(dated_index, tmp_path, tg):
    home = tmp_path / "home"
    shutil.copytree(dated_index, home)
    settings = bot_settings(home, tg)
    clock = lambda: dt.datetime(2020, 10, 10, 9, 30, tzinfo=dt.UTC)  # noqa: E731
    texts = {Path(name).stem: text for name, text in ARTICLES.items()}
    async with running(settings, Engine(settings, clock=clock)):
        reply = await tg_ask(tg, 1, "What happened to Stepanakert yesterday?")
        found = quotes(reply)
        assert found and all(q in texts["sputnik-shelling"] for q in found)
        assert "Only articles of 9 Oct 2020." in reply["text"]
        reply = await tg_ask(tg, 1, "ماذا قال المسؤولون أمس عن قصف ستيباناكيرت؟")
        found = quotes(reply)
        assert found and all(q in texts["sputnik-shelling"] for q in found)
        reply = await tg_ask(tg, 2, "source:Reuters What did the president say?")
        found = quotes(reply)
        assert found and all(q in texts["reuters-villages"] for q in found)
        assert "Only articles from Reuters." in reply["text"]
