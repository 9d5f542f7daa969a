"""What verification makes of a weak model's citations, end to end: the real ``Engine`` over the example index
in LLM mode, the real openai client over HTTP to tests/fake_openai.py. Quotes under the wrong source number,
with words left out, too long or retyped with other quotation marks are repaired, and every quote shown stays
verbatim in its article; quotes too slight to back anything are not citations; a reply with nothing that can
be verified falls back to the offline answer with a notice instead of a false refusal. Then the
``eval --answers`` report and ``bench.llm_answers`` on the seed questions against the fake."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

from newsdesk.bot.answers import ELLIPSIS, Answer
from newsdesk.bot.engine import MESSAGES, Engine
from newsdesk.bot.evaluate import answers_table
from newsdesk.bot.verify import MAX_QUOTE_CHARS, verify
from newsdesk.index.service import Index
from newsdesk.index.textnorm import contains, is_substantial, locate
from tests.conftest import SEED_QUESTIONS, copy_of_example, llm_settings, make_settings, run_cli
from tests.fake_openai import UNANSWERABLE, Reply

SPOKESPERSON_Q = "Who is the spokesperson of the Armenian Ministry of Defense?"
AIR_DEFENCE_Q = "How many anti-aircraft systems did the Azerbaijani army say it destroyed?"
AIR_DEFENCE_AR = "كم منظومة مضادة للطائرات قال الجيش الأذربيجاني إنه دمر؟"
SHELTER_Q_AR = "ما الذي دعا إليه المتحدث باسم رئيس قره باغ السكان؟"
# As a model writes it (no hamza on the alef): the article has "أعلنت ... الأرمينية".
Q_SPOKESPERSON = "اعلنت المتحدث باسم وزارة الدفاع الارمينية، شوشان ستيبانيان"
SPOKESPERSON_SAID = "The spokesperson of Armenia's defence ministry is Shushan Stepanyan."
FABRICATED = "Azerbaijan said it shot down thirty Armenian aircraft."
# The paragraph of the article on the shelling and the call to the shelters: three sentences, 467 characters.
SHELLING_PARAGRAPH = (
    "وقالت وزارة الدفاع الأذربيجانية، في وقت سابق من الأحد، إن القوات المسلحة الأرمينية قصفت المناطق السكنية "
    "الواقعة على خط التماس في قره باغ ، ووفقاً لهذه البيانات، فقد قُتل مدنيون. وبحسب وزارة الدفاع الأرمينية، "
    "فإن قره باغ \"تعرضت لهجمات جوية وصاروخية\". وأفاد المتحدث الصحفي باسم رئيس جمهورية ناغورني قره باغ "
    "المعترف بها من جانب واحد، فغرام بوغوسيان، أن المناطق المدنية في قره باغ، بما في ذلك العاصمة "
    "ستيباناكيرت، قد تعرضت لنيران المدفعية، ودعا السكان للنزول إلى الملاجئ.")
SHELTER_SENTENCE = SHELLING_PARAGRAPH[SHELLING_PARAGRAPH.index("وأفاد"):]


# ---- fixtures and helpers ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def home(example_index, tmp_path_factory) -> Path:
    return copy_of_example(example_index, tmp_path_factory, "citations")


def llm_engine(home: Path, base_url: str) -> Engine:
    return Engine(llm_settings(base_url, home))


def source_of(engine: Engine, question: str, quote: str) -> int:
    """The number (1..k) of the retrieved passage that holds ``quote`` (retrieval is deterministic)."""
    for n, hit in enumerate(engine.index.search(question, engine.settings.top_k), 1):
        if locate(quote, hit.text) is not None:
            return n
    raise AssertionError(f"no passage retrieved for {question!r} holds {quote!r}")


def other_source(engine: Engine, question: str, quote: str) -> int:
    """A passage number (1..k) whose passage does not hold ``quote``."""
    hits = engine.index.search(question, engine.settings.top_k)
    return next(n for n, hit in enumerate(hits, 1) if locate(quote, hit.text) is None)


def reply(*sentences: tuple[str, list]) -> Reply:
    return Reply({"answerable": True, "sentences": [{"text": t, "citations": c} for t, c in sentences]})


def assert_verbatim(engine: Engine, answer: Answer) -> None:
    """Every quote shown is the article's own text at its offsets (each piece, for one with pieces), inside
    the passage it cites; citations are numbered 1..n and each is cited."""
    for n, c in enumerate(answer.citations, 1):
        text = engine.index.article_text(c.article_id) or ""
        assert c.n == n and c.verified and c.verbatim_in(text), (c.quote, c.pieces)
        for piece in c.spans():
            assert piece.quote and text[piece.start:piece.end] == piece.quote and piece.quote in c.passage
        if c.pieces:
            assert c.quote == ELLIPSIS.join(p.quote for p in c.pieces)
            assert (c.start, c.end) == (c.pieces[0].start, c.pieces[-1].end)
        else:
            assert text[c.start:c.end] == c.quote
    assert {n for s in answer.sentences for n in s.citations} == {c.n for c in answer.citations}


# ---- nothing verifiable: a fallback with a notice, not a refusal -----------------------------------

@pytest.mark.parametrize("question,lang", [(AIR_DEFENCE_Q, "en"), (AIR_DEFENCE_AR, "ar")])
async def test_bad_source_numbers_and_empty_quotes_fall_back_with_a_notice(home, fake, question, lang):
    engine = llm_engine(home, fake.base_url)
    fake.script(reply(
        (SPOKESPERSON_SAID, [{"source": -1, "quote": Q_SPOKESPERSON}, {"source": 10**30, "quote": Q_SPOKESPERSON},
                             {"source": 0, "quote": Q_SPOKESPERSON}]),
        ("She wrote it on Facebook.", [{"source": 1, "quote": ""}, {"source": 2, "quote": "  "},
                                       {"source": 1, "quote": "…"}]),
    ))
    answer = await engine.ask(question)

    assert answer.text != MESSAGES[lang]["abstain"]  # not "The indexed articles don't answer this question."
    assert answer.mode == "fallback" and not answer.abstained
    assert answer.notice == MESSAGES[lang]["unverifiable"] and "\n" not in answer.notice
    assert answer.text.startswith(MESSAGES[lang]["extractive"]) and answer.citations
    assert contains(" ".join(c.quote for c in answer.citations), "12 منظومة مضادة للطائرات")
    assert (answer.proposed, answer.accepted, answer.repaired) == (6, 0, 0)
    assert answer.dropped == [SPOKESPERSON_SAID, "She wrote it on Facebook."]
    assert_verbatim(engine, answer)


async def test_a_refusal_is_still_a_refusal(home, fake):
    engine = llm_engine(home, fake.base_url)
    fake.script(UNANSWERABLE)
    answer = await engine.ask("What did Russia's foreign ministry say about the fighting?")
    assert answer.mode == "llm" and answer.abstained and answer.notice is None
    assert answer.text == MESSAGES["en"]["abstain"]


async def test_a_reply_of_wrong_types_falls_back_without_a_traceback(home, fake):
    engine = llm_engine(home, fake.base_url)
    fake.script(Reply({"answerable": True, "sentences": [
        {"text": SPOKESPERSON_SAID, "citations": [
            {"source": "one", "quote": Q_SPOKESPERSON}, {"source": [1], "quote": Q_SPOKESPERSON},
            {"source": None, "quote": Q_SPOKESPERSON}, {"source": 1, "quote": [Q_SPOKESPERSON]},
            {"source": 1, "quote": {"text": Q_SPOKESPERSON}}, "1", [1, Q_SPOKESPERSON]]},
        {"text": ["a", "list"], "citations": [{"source": 1, "quote": Q_SPOKESPERSON}]},
        7,
    ]}))
    answer = await engine.ask(SPOKESPERSON_Q)
    assert answer.mode == "fallback" and not answer.abstained
    assert answer.notice in (MESSAGES["en"]["fallback"], MESSAGES["en"]["unverifiable"])
    assert_verbatim(engine, answer)


def test_verify_takes_any_json(home):
    """Whatever JSON reaches verification (a tolerant parser may pass more than the schema allows), nothing
    raises and nothing of the wrong type is shown; a number written as text is still a number."""
    hits = Index(make_settings(home)).search(SPOKESPERSON_Q, 5)
    n = next(i for i, h in enumerate(hits, 1) if locate(Q_SPOKESPERSON, h.text))
    deep: object = [Q_SPOKESPERSON]
    for _ in range(10_000):
        deep = [deep]
    for raw in (None, [], "text", 3, {"sentences": "x"}, {"sentences": [None, 1, "s", []]},
                {"sentences": [{"text": deep, "citations": deep}]},
                {"sentences": [{"text": "t", "citations": [{"source": "9" * 5000, "quote": Q_SPOKESPERSON},
                                                           {"source": True, "quote": Q_SPOKESPERSON},
                                                           {"source": 1.5, "quote": Q_SPOKESPERSON},
                                                           {"source": float("nan"), "quote": Q_SPOKESPERSON},
                                                           {"source": n, "quote": deep}]}]}):
        out = verify(raw, hits)
        assert out.sentences == [] and out.citations == []
    out = verify({"sentences": [{"text": "t", "citations": [{"source": f"[{n}]", "quote": Q_SPOKESPERSON},
                                                            {"source": float(n), "quote": Q_SPOKESPERSON}]}]},
                 hits)
    assert len(out.citations) == 1 and out.accepted == 2 and out.citations[0].repaired is None


# ---- substantial quotes only ---------------------------------------------------------------------

async def test_the_quote_is_not_a_verified_citation(home, fake):
    engine = llm_engine(home, fake.base_url)
    n = source_of(engine, SPOKESPERSON_Q, Q_SPOKESPERSON)
    fake.script(reply(
        (FABRICATED, [{"source": n, "quote": "."}, {"source": n, "quote": "في"}, {"source": n, "quote": "قره باغ"},
                      {"source": n, "quote": "، في"}]),
        (SPOKESPERSON_SAID, [{"source": n, "quote": Q_SPOKESPERSON}]),
    ))
    answer = await engine.ask(SPOKESPERSON_Q)
    assert answer.mode == "llm" and not answer.abstained
    assert answer.text == "The spokesperson of Armenia's defence ministry is Shushan Stepanyan [1]."
    assert answer.dropped == [FABRICATED] and "thirty" not in answer.text
    assert (answer.proposed, answer.accepted) == (5, 1)
    assert_verbatim(engine, answer)


async def test_the_quote_in_an_english_article(example_home, tmp_path, fake):
    article = tmp_path / "english" / "geneva-talks.txt"
    article.parent.mkdir()
    article.write_text("Ceasefire talks in Geneva\n\nThe foreign ministers of the two countries met in Geneva on "
                       "Monday. The talks ended without an agreement, the mediators said.\n", encoding="utf-8")
    assert Index(make_settings(example_home)).index([str(article)], accurate=False).added == 1
    question = "What happened at the ceasefire talks in Geneva?"
    engine = llm_engine(example_home, fake.base_url)
    n = source_of(engine, question, "The talks ended without an agreement")
    fake.script(reply(
        ("The talks produced a peace treaty.", [{"source": n, "quote": "the"}, {"source": n, "quote": "of the"},
                                                {"source": n, "quote": "The talks"}]),
        ("The talks ended without an agreement.", [{"source": n, "quote": "the talks ended without an agreement"}]),
    ))
    answer = await engine.ask(question)
    assert answer.text == "The talks ended without an agreement [1]."
    assert answer.dropped == ["The talks produced a peace treaty."]
    assert answer.citations[0].quote == "The talks ended without an agreement"  # the article's own case
    assert_verbatim(engine, answer)


@pytest.mark.parametrize("quote,substantial", [
    ("the", False), (".", False), ("", False), ("in the", False), ("of the and", False), ("The talks", False),
    ("the talks ended", True), ("12 anti-aircraft systems", True),
    ("في", False), ("قره باغ", False), ("من في على", False), ("، في .", False),
    ("الجيش الأذربيجاني أعلن", True), ("تدمير 12 منظومة", True),
    ("中华人民共和国", False), ("中华人民共和国国务院总理今天说", True),
])
def test_substantial_quotes_in_arabic_english_and_chinese(quote, substantial):
    assert is_substantial(quote) is substantial


# ---- repairs -------------------------------------------------------------------------------------

async def test_a_quote_under_the_wrong_source_number_is_reattributed(home, fake):
    engine = llm_engine(home, fake.base_url)
    right = source_of(engine, SPOKESPERSON_Q, Q_SPOKESPERSON)
    wrong = other_source(engine, SPOKESPERSON_Q, Q_SPOKESPERSON)
    fake.script(reply(
        (SPOKESPERSON_SAID, [{"source": wrong, "quote": Q_SPOKESPERSON}]),
        (FABRICATED, [{"source": wrong, "quote": "أعلنت أذربيجان أنها أسقطت ثلاثين طائرة أرمينية"}]),
    ))
    answer = await engine.ask(SPOKESPERSON_Q)
    assert answer.mode == "llm" and answer.text == f"{SPOKESPERSON_SAID[:-1]} [1]."
    assert answer.dropped == [FABRICATED]  # found nowhere: not re-attributed to anything
    (citation,) = answer.citations
    hits = engine.index.search(SPOKESPERSON_Q, engine.settings.top_k)
    assert citation.chunk_id == hits[right - 1].chunk_id and citation.passage == hits[right - 1].text
    assert citation.repaired == "reattributed" and citation.to_json()["repaired"] == "reattributed"
    assert citation.quote == "أعلنت المتحدث باسم وزارة الدفاع الأرمينية، شوشان ستيبانيان"
    assert (answer.proposed, answer.accepted, answer.repaired) == (2, 1, 1)
    assert_verbatim(engine, answer)


async def test_a_quote_with_words_left_out_is_verified_piece_by_piece(home, fake):
    engine = llm_engine(home, fake.base_url)
    first = "أعلنت المتحدث باسم وزارة الدفاع الأرمينية … أن الجانب الأذربيجاني استخدم نظام قاذفات اللهب الثقيل"
    second = "إن القوات المسلحة الأرمينية قصفت المناطق السكنية... فقد قتل مدنيون"  # ASCII dots, no damma
    backwards = "فقد قتل مدنيون … إن القوات المسلحة الأرمينية قصفت المناطق السكنية"
    across = "أعلنت المتحدث باسم وزارة الدفاع الأرمينية … إن القوات المسلحة الأرمينية قصفت المناطق السكنية"
    n1 = source_of(engine, SPOKESPERSON_Q, "أعلنت المتحدث باسم وزارة الدفاع الأرمينية")
    n2 = source_of(engine, SPOKESPERSON_Q, "فقد قتل مدنيون")
    fake.script(reply(
        ("Armenia's defence ministry spokesperson said Azerbaijan used a heavy flamethrower system.",
         [{"source": n1, "quote": first}]),
        ("Azerbaijan said Armenian forces shelled residential areas and civilians were killed.",
         [{"source": n2, "quote": second}]),
        (FABRICATED, [{"source": n2, "quote": backwards}, {"source": n1, "quote": across}]),
    ))
    answer = await engine.ask(SPOKESPERSON_Q)
    assert answer.mode == "llm" and len(answer.sentences) == 2 and answer.dropped == [FABRICATED]
    one, two = answer.citations
    assert [p.quote for p in one.pieces] == ["أعلنت المتحدث باسم وزارة الدفاع الأرمينية",
                                             "أن الجانب الأذربيجاني استخدم نظام قاذفات اللهب الثقيل"]
    assert [p.quote for p in two.pieces] == ["إن القوات المسلحة الأرمينية قصفت المناطق السكنية",
                                             "فقد قُتل مدنيون"]
    assert one.quote == ("أعلنت المتحدث باسم وزارة الدفاع الأرمينية … "
                         "أن الجانب الأذربيجاني استخدم نظام قاذفات اللهب الثقيل")
    assert one.repaired == two.repaired == "ellipsis" and answer.repaired == 2
    data = one.to_json()
    assert data["pieces"] == [p._asdict() for p in one.pieces] and data["quote"] == one.quote
    assert_verbatim(engine, answer)


async def test_an_over_long_quote_is_trimmed_to_the_sentence_that_carries_the_claim(home, fake):
    engine = llm_engine(home, fake.base_url)
    n = source_of(engine, SHELTER_Q_AR, SHELLING_PARAGRAPH)
    fake.script(
        Reply({"answerable": True, "sentences": [
            {"text": "دعا المتحدث باسم رئيس جمهورية قره باغ السكان للنزول إلى الملاجئ.",
             "citations": [{"source": n, "quote": SHELLING_PARAGRAPH}]}]}),
        Reply({"answerable": True, "sentences": [
            {"text": "Azerbaijan said Armenian forces shelled residential areas.",
             "citations": [{"source": n, "quote": SHELLING_PARAGRAPH}]}]}),
    )
    answer = await engine.ask(SHELTER_Q_AR)
    assert answer.mode == "llm" and answer.dropped == []
    (citation,) = answer.citations
    assert citation.quote == SHELTER_SENTENCE and len(citation.quote) <= MAX_QUOTE_CHARS
    assert citation.repaired == "trimmed" and answer.repaired == 1
    assert_verbatim(engine, answer)

    across = await engine.ask(SHELTER_Q_AR)  # an English claim shares no words: the first sentence
    (citation,) = across.citations
    assert citation.quote.startswith("وقالت وزارة الدفاع الأذربيجانية") and citation.quote.endswith("مدنيون.")
    assert citation.repaired == "trimmed"
    assert_verbatim(engine, across)


async def test_quotation_marks_retyped_by_the_model(home, fake):
    engine = llm_engine(home, fake.base_url)
    n = source_of(engine, SPOKESPERSON_Q, "من نوع")
    fake.script(reply(
        ("Azerbaijan used the TOS system.", [{"source": n, "quote": "نظام قاذفات اللهب الثقيل من نوع 'توس'"}]),
        ("It was used in the fighting in Karabakh.",
         [{"source": n, "quote": "من نوع „توس“ خلال المعارك في قره باغ"}]),
        ("The system is called TOS.", [{"source": n, "quote": "الثقيل من نوع توس خلال المعارك"}]),
    ))
    answer = await engine.ask(SPOKESPERSON_Q)
    assert answer.mode == "llm" and answer.dropped == []
    assert [c.quote for c in answer.citations] == ['نظام قاذفات اللهب الثقيل من نوع "توس"',
                                                   'من نوع "توس" خلال المعارك في قره باغ',
                                                   'الثقيل من نوع "توس" خلال المعارك']
    assert all(c.repaired is None for c in answer.citations)
    assert_verbatim(engine, answer)


def test_locate_tolerates_what_a_model_retypes():
    text = 'استمر القتال بدرجات متفاوتة من الكثافة . فمنذ الصباح الباكر، استأنف العدو "توس". Armenia\'s army.'
    for needle, found in [("من الكثافة. فمنذ الصباح", "من الكثافة . فمنذ الصباح"),  # space before "."
                          ("“توس”", '"توس"'), ("«توس»", '"توس"'), ("ARMENIA’S ARMY", "Armenia's army"),
                          ("استأنف العدو", "استأنف العدو"), ("استانف العدو.", "استأنف العدو")]:
        span = locate(needle, text)
        assert span is not None and text[span[0]:span[1]] == found, needle
    assert locate("فمنذ الصباح", text, start=text.index("استأنف")) is None  # only after ``start``


# ---- measured quality ----------------------------------------------------------------------------

def seed_replies(engine: Engine) -> list[Reply]:
    """A reply for each seed question, in order: good ones (one under a wrong number), bad ones, refusals."""
    questions = [json.loads(line) for line in SEED_QUESTIONS.read_text(encoding="utf-8").splitlines() if line]
    tos = "أن الجانب الأذربيجاني استخدم نظام قاذفات اللهب الثقيل من نوع “توس”"
    replies = []
    for q in questions:
        if q["id"] == "s01":
            replies.append(reply(("Armenia said Azerbaijan used the heavy TOS flamethrower.",
                                  [{"source": source_of(engine, q["question"], tos), "quote": tos}])))
        elif q["id"] == "s02":
            replies.append(reply((SPOKESPERSON_SAID, [
                {"source": other_source(engine, q["question"], Q_SPOKESPERSON), "quote": Q_SPOKESPERSON}])))
        elif q["id"] == "s10":
            replies.append(reply(("استخدمت أذربيجان نظام توس.",
                                  [{"source": source_of(engine, q["question"], tos), "quote": tos}])))
        elif q["expect"] == "abstain":
            replies.append(UNANSWERABLE)
        else:
            replies.append(reply((FABRICATED, [{"source": 1, "quote": "the"}, {"source": -1, "quote": "."}])))
    return replies


def test_eval_answers_reports_what_verification_made_of_the_model(home, fake):
    engine = llm_engine(home, fake.base_url)
    fake.script(*seed_replies(engine))
    env = {"OPENAI_API_KEY": "sk-test-secret", "OPENAI_BASE_URL": fake.base_url, "NEWSDESK_LLM_MODEL": "fake",
           "NEWSDESK_LLM_MAX_ATTEMPTS": "1"}
    proc = run_cli("eval", str(SEED_QUESTIONS), "--use-index", "--answers", "--json", home=home, env=env,
                   check=True)
    a = json.loads(proc.stdout)["answers"]
    rows = {r["id"]: r for r in a["per_question"]}
    assert a["mode"] == "llm" and a["asked"] == 12 and len(fake.chat_requests) == 12
    assert rows["s01"] | {"ms": 0} == rows["s01"] | {
        "mode": "llm", "abstained": False, "fallback": None, "proposed": 1, "verified": 1, "repaired": 0,
        "dropped": 0, "citations": 1, "verbatim": 1, "sentences_shown": 1, "sentences_dropped": 0,
        "same_language": True, "evidence_quoted": True, "ms": 0}
    assert rows["s02"]["repaired"] == 1 and rows["s02"]["repairs"] == ["reattributed"]
    assert rows["s10"]["same_language"] is True  # an Arabic answer to the Arabic question
    assert rows["s03"]["fallback"] == "unverifiable" and rows["s03"]["dropped"] == 2
    assert rows["s03"]["sentences_shown"] == 0 and rows["s03"]["sentences_dropped"] == 1
    assert rows["s11"]["abstained"] and rows["s12"]["abstained"] and rows["s11"]["fallback"] is None
    assert (a["proposed"], a["verified"], a["repaired"], a["dropped"]) == (3 + 2 * 7, 3, 1, 14)
    assert (a["fallback_unverifiable"], a["fallback_failed"], a["abstained"]) == (7, 0, 2)
    assert a["same_language"] == a["written_answers"] == 3 and a["verbatim_rate"] == 1.0
    assert a["abstention_as_expected"] == 12 and all(r["ms"] > 0 for r in rows.values())

    table = answers_table(a)
    assert table.splitlines()[0].startswith("| question | mode | proposed | verified | repaired | dropped |")
    assert len(table.splitlines()) == 2 + 12 + 1 and "| **all** | llm | 17 | 3 | 1 | 14 |" in table


def test_bench_llm_answers_prints_a_table(fake):
    """``python -m bench.llm_answers`` against the fake: indexes the example article (stage 1), asks the seeds
    (about 1 s once the encoder is loaded)."""
    from bench import llm_answers

    fake.default = UNANSWERABLE
    environ = {"OPENAI_API_KEY": "sk-test-secret", "OPENAI_BASE_URL": fake.base_url, "NEWSDESK_LLM_MODEL": "fake"}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert llm_answers.main(["--fast"], environ=environ) == 0
    text = out.getvalue()
    assert text.startswith(f"## LLM answers: fake at {fake.base_url}")
    assert "| **all** | llm | 0 | 0 | 0 | 0 | 0 / 0 | 12 of 12 |" in text
    assert "sk-test-secret" not in text and len(fake.chat_requests) == 12
