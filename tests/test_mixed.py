"""A mixed-language news desk: the example article (Arabic) beside short articles in other languages and scripts
on the same conflict. A passage must not win because it shares the question's language: the seed question's
offline answer quotes the Arabic weapons passage, not the English articles' truce and Ganja sentences."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from newsdesk.index.textnorm import contains
from tests.conftest import EXAMPLE, run_cli
from tests.support import SHARED

# on the same conflict, none of them about weapons: what an English question used to land on
OTHERS = {
    "truce-en.txt": "Humanitarian truce agreed for Nagorno-Karabakh\n\n"
                    "Armenia and Azerbaijan agreed on Saturday to a humanitarian truce in Nagorno-Karabakh, "
                    "to exchange prisoners and the bodies of the dead. Each side will hand its lists to the Red "
                    "Cross, the two foreign ministers said after ten hours of talks in Moscow.\n",
    "ganja-en.txt": "Residents of Ganja return home\n\n"
                    "Families in Ganja, the second city of Azerbaijan, began returning to their homes on Monday. "
                    "Officials alleged that rumours on social media had caused the panic, and the mayor asked "
                    "residents on each side of the river to stay calm.\n",
    "talks-fr.txt": "Reprise des discussions sur le Haut-Karabakh\n\n"
                    "Les ministres des Affaires étrangères d'Arménie et d'Azerbaïdjan se retrouveront à Genève "
                    "la semaine prochaine, sous l'égide du groupe de Minsk de l'OSCE. Chaque camp accuse l'autre "
                    "d'avoir rompu le cessez-le-feu.\n",
    "minsk-ru.txt": "Минская группа призвала к переговорам\n\n"
                    "Сопредседатели Минской группы ОБСЕ призвали Армению и Азербайджан вернуться к переговорам "
                    "по Нагорному Карабаху. Каждая сторона обвиняет другую в нарушении перемирия, сообщили в "
                    "Москве.\n",
    "reaction-zh.txt": "多国呼吁纳卡地区停火\n\n"
                       "多个国家周一呼吁亚美尼亚和阿塞拜疆在纳戈尔诺-卡拉巴赫地区立即停火。双方都指责对方破坏了"
                       "停火协议。联合国秘书长表示，各方应当回到谈判桌前。\n",
}
WEAPONS_QUESTION = "What weapons did each side allege?"
WEAPONS = ("توس", "المدفعية والمدرعات", "قصفت المناطق السكنية", "هجمات جوية وصاروخية",
           "12 منظومة مضادة للطائرات")


@pytest.fixture(scope="module")
def mixed_home(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixed")
    articles = root / "articles"
    articles.mkdir()
    shutil.copy(EXAMPLE, articles / EXAMPLE.name)
    for name, text in OTHERS.items():
        (articles / name).write_text(text, encoding="utf-8")
    home = root / "home"
    run_cli("index", str(articles), home=home, check=True)
    return home


@pytest.mark.slow
def test_seed_question_quotes_the_weapons_passage_in_a_mixed_corpus(mixed_home):
    data = json.loads(run_cli("ask", WEAPONS_QUESTION, "--json", home=mixed_home, check=True).stdout)
    assert data["abstained"] is False
    quotes = [c["quote"] for c in data["citations"]]
    assert any(contains(q, w) for q in quotes for w in WEAPONS), quotes
    assert data["citations"][0]["article_id"] == "karabakh-2020-09-28"
    # the English articles' truce and Ganja sentences hold no weapon: they are not what it quotes first
    assert not any(contains(data["citations"][0]["quote"], word) for word in ("truce", "Ganja"))


@pytest.mark.slow
def test_search_ranks_the_arabic_weapons_passage_first(mixed_home):
    hits = json.loads(run_cli("search", WEAPONS_QUESTION, "--json", home=mixed_home, check=True).stdout)["hits"]
    assert hits[0]["article_id"] == "karabakh-2020-09-28"
    assert any(contains(hits[0]["text"], w) for w in WEAPONS)


@pytest.mark.slow
def test_english_question_finds_the_answer_in_a_french_article(mixed_home):
    """BM25 reads an English question only against English passages: a French passage is not pushed down for
    lacking the question's English words while an English one that shares them ("foreign ministers") is
    lifted."""
    question = "In which city will the foreign ministers meet next week?"
    hits = json.loads(run_cli("search", question, "--json", home=mixed_home, check=True).stdout)["hits"]
    assert hits[0]["article_id"] == "talks-fr" and contains(hits[0]["text"], "Genève")


MULTI = SHARED / "eval" / "xquad-dev-multi"
# XQuAD articles of the mixed desk: Vietnamese and Greek (languages USE was not trained on) beside two English
ARTICLES = ("xquad-20-black-death", "xquad-04-computational-complexity-theory", "xquad-06-martin-luther",
            "xquad-30-private-school")
# English questions whose answer is in the Vietnamese or Greek article (gold answers in that language) that
# the previous ranking put another passage first for: BM25 reading English words into Vietnamese and Greek text
CROSS = [("What does Graham Twigg propose about the spread of disease?", "một dạng bệnh than"),
         ("How many bodies did Public Health England exhume?", "25"),
         ("In a computational problem, what can be described as a string over an alphabet?",
          "στιγμιότυπο του προβλήματος")]
# ... and ones where USE's cosines (it was not trained on Vietnamese or Greek) outweighed e5's ranking
UNTRAINED = [("What was the black death originally blamed on?", "thiên đàng"),
             ("Which outbreak was associated with troops in the thirty years war?", "Bệnh dịch hạch ở Ý"),
             ("What is an expression that can be used to illustrate the suspected inequality of complexity "
              "classes?", "P ⊆ NP ⊆ PP ⊆ PSPACE")]


@pytest.fixture(scope="module")
def xquad_mixed_home(tmp_path_factory):
    return _indexed(tmp_path_factory, "xquad-mixed", "articles-mixed", ARTICLES)


def _indexed(tmp_path_factory, label: str, folder: str | None, names) -> Path:
    """A home with the XQuAD articles ``names`` of ``MULTI/folder`` indexed (both stages); ``folder`` None:
    ``names`` are ``folder/name`` paths under MULTI."""
    root = tmp_path_factory.mktemp(label)
    articles = root / "articles"
    articles.mkdir()
    for name in names:
        source = MULTI / folder / f"{name}.txt" if folder else MULTI / f"{name}.txt"
        shutil.copy(source, articles / source.name)
    home = root / "home"
    run_cli("index", str(articles), home=home, check=True)
    return home


def _found_first(home, tmp_path, cases, env: dict | None = None) -> list[bool]:
    """For each (question, answer): whether the first passage ``search`` returns holds the answer."""
    questions = tmp_path / "questions.txt"
    questions.write_text("".join(f"{q}\n" for q, _ in cases), encoding="utf-8")
    lines = run_cli("search", "--questions", str(questions), "--json", home=home, env=env,
                    check=True).stdout.splitlines()
    tops = [json.loads(line)["hits"][0]["text"] for line in lines]
    return [contains(top, answer) for top, (_, answer) in zip(tops, cases)]


@pytest.mark.slow
def test_bm25_reads_an_english_question_only_against_english_passages(xquad_mixed_home, tmp_path):
    found = _found_first(xquad_mixed_home, tmp_path, CROSS)
    assert sum(found) >= 2, found  # 0 of 3 before; 1 of 3 with BM25 over every language


@pytest.mark.slow
def test_use_is_a_tie_breaker_for_languages_it_was_not_trained_on(xquad_mixed_home, tmp_path):
    found = _found_first(xquad_mixed_home, tmp_path, UNTRAINED)
    assert sum(found) >= 2, found


# English questions that name a year (or another number) over Greek articles: e5 alone put another paragraph of
# the same article first; the number, written alike in every script, tells the paragraphs apart
NUMBERS = [("Who led the attack of the French colony in 1565?", "Πέδρο Μενέντεζ ντε Αβιλές"),
           ("What happened to the rate of deforestation in the Amazon region of Brazil between 2004 and 2014?",
            "μειώθηκε σημαντικά"),
           ("Besides publishing To the Christian Nobility of the German Nation and On the Babylonian Captivity of "
            "the Church, what other work did Luther produce in 1520?", "για την ελευθερία ενός χριστιανού"),
           ("What was a plugs-out test done to simulate on the LC-34?", "αντίστροφη μέτρηση εκτόξευσης")]
NUMBER_ARTICLES = ("xquad-32-jacksonville-florida", "xquad-16-amazon-rainforest", "xquad-06-martin-luther",
                   "xquad-14-apollo-program")


@pytest.fixture(scope="module")
def greek_home(tmp_path_factory):
    return _indexed(tmp_path_factory, "greek", "articles-el", NUMBER_ARTICLES)


@pytest.mark.slow
def test_the_numbers_of_an_english_question_find_the_paragraph_in_a_greek_article(greek_home, tmp_path):
    found = _found_first(greek_home, tmp_path, NUMBERS)
    assert all(found), found  # 1 of 4 without the numbers ranker


# English questions whose answer is in an article of another language that the two English articles beat: the
# question's cosines to English text are higher whatever the topic
SAME_LANGUAGE_ARTICLES = ("xquad-06-martin-luther", "xquad-30-private-school", "xquad-28-civil-disobedience",
                          "xquad-02-normans", "xquad-10-huguenot", "xquad-42-scottish-parliament",
                          "xquad-20-black-death", "xquad-38-intergovernmental-panel-on-climate-change")
OTHER_LANGUAGE = [("Who was Count of Melfi", "Wilhelm Eisenarm"),
                  ("When did this leader publish a French language Bible?", "1530"),
                  ("Who was the medical report written for?", "nhà vua Pháp"),
                  ("What was Ghandi's work called?", "Σατυαγκράχα"),
                  ("When large groups of people all boycott a system or don't pay taxes it can be considered?",
                   "εξαναγκαστικές"),
                  ("What is a type of disobedience against the federal government?", "αρνήσεις πληρωμής φόρων"),
                  ("What did the IPCC apologize for?", "плохого применения"),
                  ("What is set up to scrutinize private bills submitted by party outsiders?", "komite"),
                  ("What topic do private bills typically have?", "büyük çaplı kalkınma projeleri")]


@pytest.fixture(scope="module")
def english_beside_others_home(tmp_path_factory):
    return _indexed(tmp_path_factory, "english-beside-others", "articles-mixed", SAME_LANGUAGE_ARTICLES)


@pytest.mark.slow
def test_an_english_article_does_not_win_for_sharing_the_question_language(english_beside_others_home, tmp_path):
    found = _found_first(english_beside_others_home, tmp_path, OTHER_LANGUAGE)
    assert sum(found) >= 6, found  # 0 of 9 without the offset of the question's own language


# English questions over a Greek and a Vietnamese article (beside one more of each) whose right paragraph e5's
# vector put second or lower in its article: the latent terms (``index.terms``) choose between the paragraphs
LATENT = [("What is it called when there is an active attempt to overthrow a government or belief system?",
           "Η επαναστατική πολιτική ανυπακοή"),
          ("The Hungarians performed this civil disobedience under the direction of what person?", "Φέρεντς Ντικ"),
          ("What is a simple form of civil disobedience?", "Η μη επαναστατική πολιτική ανυπακοή"),
          ("What famous Indian's actions were considered civil disobedience?", "του Γκάντι"),
          ("Why is the need for acceptance of punishment needed?",
           "της πίστης τους στην εγκυρότητα του κοινωνικού συμβολαίου"),
          ("What type of plea is sometimes taken as an act of disobedience?", "τυφλή αποδοχή"),
          ("What theorem defines the main role of primes in number theory?", "Định lý cơ bản của số học"),
          ("For a field F containing 0 and 1, what would be the prime field?", "trường con nhỏ nhất"),
          ("What strains of y. pestis were found in the mass graves?", "Y. p. orientalis và Y. p. medievalis"),
          ("The black plague ravaged Europe for three years followed by what country?", "Nga")]
LATENT_ARTICLES = ("articles-el/xquad-28-civil-disobedience", "articles-el/xquad-06-martin-luther",
                   "articles-vi/xquad-40-prime-number", "articles-vi/xquad-20-black-death")


@pytest.fixture(scope="module")
def greek_vietnamese_home(tmp_path_factory):
    return _indexed(tmp_path_factory, "greek-vietnamese", None, LATENT_ARTICLES)


@pytest.mark.slow
def test_latent_terms_choose_the_paragraph_of_a_greek_or_vietnamese_article(greek_vietnamese_home, tmp_path):
    found = _found_first(greek_vietnamese_home, tmp_path, LATENT)
    assert sum(found) >= 8, found  # all 10 with the latent terms
    # switched off (NEWSDESK_LATENT_TERMS=0: one e5 pass per question), e5's vector alone chooses again
    found = _found_first(greek_vietnamese_home, tmp_path, LATENT, env={"NEWSDESK_LATENT_TERMS": "0"})
    assert sum(found) <= 3, found  # 1 of 10
