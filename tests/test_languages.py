"""Text in every script (issue 15): words, stems and stop words per language, sentences at the ends every
script marks, each passage's language kept by the lexical index and the store, and shown by `stats`/`list`."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import unicodedata
import sys

import numpy as np
import pytest

from newsdesk.index import chunking
from newsdesk.index.lexical import BM25, tokenize, words
from newsdesk.index.service import Index
from tests.conftest import EXAMPLE, ROOT, make_settings, run_cli

ZH = "北京是中华人民共和国的首都，也是全国的政治和文化中心。长城吸引了来自世界各地的游客！"
TH = "กรุงเทพมหานครเป็นเมืองหลวงของประเทศไทย มีประชากรประมาณ 10 ล้านคน"
HI = "भारत एक विशाल देश है। यहाँ कई भाषाएँ बोली जाती हैं॥ दिल्ली भारत की राजधानी है।"
RU = "Министр заявил журналистам в Москве, что переговоры продолжатся."
EL = "Ο πρωθυπουργός μίλησε στην Αθήνα για τις πόλεις της Ελλάδας."


# ---------------------------------------------------------------- words


def test_chinese_and_thai_are_cut_into_words_not_clauses():
    zh = tokenize(ZH, "zh")
    assert {"北京", "首都", "长城", "游客", "共和国"} <= set(zh)  # ICU's words (not only pairs of characters)
    assert max(len(t) for t in zh) <= 4  # words, not the whole clause between two commas
    assert "的" not in zh and "是" not in zh  # stop words
    th = tokenize(TH, "th")
    assert {"กรุงเทพมหานคร", "เมือง", "ประเทศไทย", "ประชากร", "10"} <= set(th)


def test_indic_and_thai_words_keep_their_vowel_signs():
    hi = words(HI, "hi")
    assert "भाषाएँ" in hi and "दिल्ली" in hi and "राजधानी" in hi
    assert set(hi) <= set(HI.replace("।", " ").replace("॥", " ").split())  # never cut inside a word
    for token in tokenize(TH, "th"):
        assert not "\u0e31" <= token[0] <= "\u0e3a" and not "\u0e47" <= token[0] <= "\u0e4e"  # no mark first


def test_each_language_has_its_own_stemmer_and_stop_words():
    assert tokenize("Москва Москвы Москве", "ru") == ["москв"] * 3  # Russian endings, not English ones
    assert tokenize("Москвы", "en") == ["москвы"]
    assert set(tokenize("πόλεις πόλη Πόλη", "el")) == {"πολ"}  # Greek endings and accents
    assert "στην" in words(EL, "el") and "στην" not in tokenize(EL, "el")  # a Greek stop word
    assert tokenize("Les ministres ont parlé", "fr") == ["ministr", "parl"]  # French stop words and stems
    assert tokenize("İstanbul'da Irak", "tr")[0] == tokenize("istanbul", "tr")[0]  # Turkish dotted capital


def test_words_without_icu_are_pairs_of_characters():
    code = ("import sys\nsys.modules['icu4py'] = sys.modules['icu4py.breakers'] = None\n"
            "from newsdesk.index.lexical import words\nprint(words('北京首都', 'zh'))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "['北京', '京首', '首都']"


# ---------------------------------------------------------------- the lexical index


DOCS = [
    ("ru#0", "ru", RU),
    ("zh#0", "zh", ZH),
    ("hi#0", "hi", HI),
    ("en#0", "en", "The minister told reporters in Moscow that the talks would continue next week."),
    ("fr#0", "fr", "Le ministre a déclaré aux journalistes à Moscou que les négociations continueraient."),
]


def test_passages_of_every_language_are_found_by_their_words():
    index = BM25().build(DOCS)  # no language given: detected when added
    assert {d: index.language(d) for d, _, _ in DOCS} == {"ru#0": "ru", "zh#0": "zh", "hi#0": "hi", "en#0": "en",
                                                          "fr#0": "fr"}
    assert index.languages() == {"ru": 1, "zh": 1, "hi": 1, "en": 1, "fr": 1}
    assert index.language("nope") is None
    assert [d for d, _ in index.top("переговоры в Москве", 3)][0] == "ru#0"  # other forms of the same words
    assert [d for d, _ in index.top("长城的游客", 3)] == ["zh#0"]
    assert [d for d, _ in index.top("भारत की भाषाएँ", 3)] == ["hi#0"]
    # a short question whose language cannot be told still matches each passage's words
    assert [d for d, _ in index.top("negotiations Moscou", 3)] == ["fr#0"]
    assert {d for d, _ in index.top("minister reporters Moscow", 5)} == {"en#0"}
    assert [d for d, _ in index.top("ministre Moscou", 5, languages={"en", "ru"})] == []
    assert [d for d, _ in index.top("ministre Moscou", 5, languages={"fr"})] == ["fr#0"]


def test_the_language_given_with_a_passage_is_kept():
    index = BM25().build([("a#0", "a", "Moscow talks", "en"), ("b#0", "b", "Moscow talks", "")])
    assert index.language("a#0") == "en" and index.language("b#0") not in (None, "")


def _old_format_file(path, index: BM25, texts: list[str]) -> None:
    """A lexical index saved by the previous version (FORMAT 2): one Arabic-or-not flag per passage, and words
    as ``\\w+`` made them (a Chinese clause was one token)."""
    join = lambda items: np.frombuffer("\x00".join(items).encode(), dtype=np.uint8)  # noqa: E731
    vocab, terms, tfs, ptr = {}, [], [], [0]
    for text in texts:
        counts: dict[int, int] = {}
        for token in text.lower().replace("，", " ").replace("。", " ").replace("！", " ").split():
            term = vocab.setdefault(token, len(vocab))
            counts[term] = counts.get(term, 0) + 1
        terms += list(counts)
        tfs += list(counts.values())
        ptr.append(len(terms))
    header = {"format": 2, "k1": 1.2, "b": 0.75, "tag": index.tag, "articles": index.articles}
    with open(path, "wb") as fh:
        np.savez(fh, header=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8),
                 vocab=join(sorted(vocab, key=vocab.__getitem__)), ids=join(index.ids),
                 doc_articles=join(index.doc_articles), scripts=np.zeros(len(index.ids), dtype=np.uint8),
                 doc_ptr=np.asarray(ptr, dtype=np.int64), doc_terms=np.asarray(terms, dtype=np.int32),
                 doc_tfs=np.asarray(tfs, dtype=np.uint16))


@pytest.fixture(scope="module")
def languages_home(tmp_path_factory):
    """An index (stage 1) of the example article (Arabic) with short articles in Russian, Chinese and English."""
    folder = tmp_path_factory.mktemp("languages") / "articles"
    folder.mkdir()
    (folder / "karabakh.txt").write_text(EXAMPLE.read_text(encoding="utf-8"), encoding="utf-8")
    (folder / "moscow.txt").write_text(f"Переговоры в Москве\n\n{RU} Стороны встретятся снова в понедельник, "
                                       "сообщили в министерстве.\n", encoding="utf-8")
    (folder / "beijing.txt").write_text(f"北京的游客\n\n{ZH}今年春节期间，北京接待的游客人数创下新高。\n",
                                        encoding="utf-8")
    (folder / "chess.txt").write_text("Chess final ends in a draw\n\nThe world chess championship final in Madrid "
                                      "ended in a draw after ninety-four moves.\n", encoding="utf-8")
    home = folder.parent / "home"
    run_cli("index", "--fast", str(folder), home=home, check=True)
    return home


def test_stats_list_and_the_store_know_each_article_language(languages_home):
    home = languages_home
    stats = json.loads(run_cli("stats", "--json", home=home, check=True).stdout)
    assert stats["languages"] == {"ar": 1, "en": 1, "ru": 1, "zh": 1}
    assert "languages: ar 1, en 1, ru 1, zh 1" in run_cli("stats", home=home, check=True).stdout.splitlines()
    rows = {row["id"]: row["lang"] for row in json.loads(run_cli("list", "--json", home=home, check=True).stdout)}
    assert rows == {"karabakh": "ar", "moscow": "ru", "beijing": "zh", "chess": "en"}
    listed = run_cli("list", home=home, check=True).stdout
    assert "beijing  北京的游客 — zh  (1 passages)" in listed.splitlines()
    # each passage's language came from the store (its metadata), and BM25 finds the Chinese words
    index = Index(make_settings(home))
    lexical = index.searcher.lexical
    assert {lexical.language(pid) for pid in lexical.ids} == {"ar", "en", "ru", "zh"}
    passages = {pid: lang for pid, _, _, lang in index.store.passages_of(["beijing", "moscow"])}
    assert set(passages.values()) == {"zh", "ru"}
    assert [p.partition("@")[0] for p, _ in lexical.top("长城", 5)] == ["beijing#0"]


def test_a_saved_lexical_index_of_the_old_format_is_rebuilt(tmp_path, languages_home, caplog):
    home = tmp_path / "home"
    shutil.copytree(languages_home, home)
    index = Index(make_settings(home))
    current = index.searcher.lexical  # built, and saved next to the store
    [path] = make_settings(home).lexical_dir.glob("*.npz")
    stored = index.store.get_passages(current.ids)
    _old_format_file(path, current, [stored[pid].text for pid in current.ids])  # as saved before, up to date
    assert json.loads(np.load(path)["header"].tobytes())["format"] == 2

    with caplog.at_level(logging.WARNING):
        fresh = Index(make_settings(home)).searcher.lexical  # a new process would do the same
    assert not [r for r in caplog.records if "lexical" in r.getMessage()]  # not damaged: only old
    assert [p.partition("@")[0] for p, _ in fresh.top("长城", 5)] == ["beijing#0"]  # words, not clauses
    saved = BM25.load(path)
    assert saved is not None and saved.language(next(p for p in saved.ids if p.startswith("beijing"))) == "zh"


# ---------------------------------------------------------------- sentences


def _sentences(text: str) -> list[str]:
    spans = chunking.sentences(text)
    assert all(text[s:e] == text[s:e].strip() for s, e in spans)
    return [text[s:e] for s, e in spans]


def test_chinese_sentences_end_at_full_width_marks():
    text = "他说：“我们明天出发。”大家都同意了！你呢？我不知道"
    assert _sentences(text) == ["他说：“我们明天出发。”", "大家都同意了！", "你呢？", "我不知道"]
    assert _sentences(ZH) == ["北京是中华人民共和国的首都，也是全国的政治和文化中心。",
                              "长城吸引了来自世界各地的游客！"]


def test_hindi_sentences_end_at_the_danda():
    assert _sentences(HI) == ["भारत एक विशाल देश है।", "यहाँ कई भाषाएँ बोली जाती हैं॥", "दिल्ली भारत की राजधानी है।"]
    assert _sentences("पहला वाक्य।दूसरा वाक्य।") == ["पहला वाक्य।", "दूसरा वाक्य।"]


def test_thai_sentences_end_at_spaces_but_not_at_every_name():
    first = "ทีมรับของแพนเธอร์สถอดใจที่คะแนน 308 ได้อันดับที่หกของลีก"
    second = "ในขณะที่เป็นผู้นำในเอ็นเอฟแอลด้วยการอินเตอร์เซป 24 ครั้ง"
    third = "คาวันน์ ชอร์ต ผู้เล่นตำแหน่งดีเฟนซีฟแทคเกิลในโปรโบว์ล"  # a name: the space inside it stays
    assert _sentences(f"{first} {second} {third}") == [first, second, third]


def test_a_long_thai_or_chinese_paragraph_is_cut_at_sentence_ends():
    thai = " ".join(f"ประโยคที่ {i} กล่าวถึงการประชุมของรัฐบาลเกี่ยวกับงบประมาณประจำปีของประเทศไทย" for i in range(60))
    chinese = "".join(f"第{i}句话讲的是政府关于今年国家预算的会议内容和结果。" for i in range(120))
    for paragraph, end in ((thai, " "), (chinese, "。")):
        text = f"หัวข้อข่าว News\n\n{paragraph}"
        assert len(paragraph) > chunking.MAX_PASSAGE
        chunks = chunking.chunk_article("a", text)
        assert len(chunks) >= 3 and max(len(c.text) for c in chunks) <= chunking.MAX_PASSAGE
        for c in chunks[:-1]:  # at a sentence end: never inside a word or sentence
            assert (text[c.end] == end) if end == " " else c.text.endswith(end), c.text[-20:]
        sentences = chunking.sentences(text)
        assert max(e - s for s, e in sentences) <= chunking.MAX_SENTENCE


def test_a_cut_by_length_never_separates_a_letter_from_its_vowel_sign():
    run = "किताबें" * 800  # 5,600 characters of Devanagari with no space or mark to cut at
    chunks = chunking.chunk_article("a", f"शीर्षक समाचार का\n\n{run}")
    assert max(len(c.text) for c in chunks) <= chunking.MAX_PASSAGE and len(chunks) >= 3
    for c in chunks:
        assert not unicodedata.category(c.text[0]).startswith("M"), c.start  # a piece starts with a letter
