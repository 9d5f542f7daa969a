"""Near-duplicate stories (issue #18): the same wire story from three outlets, with small edits, is one group in
`newsdesk list`, one cited passage in `ask`, which says which other outlets "also reported" it; another story
of the same event stays apart; re-indexing keeps the group, removing its earliest copy makes the next one its
head, a new earlier copy takes over; a run killed while writing copies leaves a store the next run makes
exactly what a clean run gives. Real Chroma (embedded), the real USE encoder (stage 1: `--fast`)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from newsdesk.index import dedup
from newsdesk.index.service import Index
from tests.conftest import make_settings, run_cli

WIRE = """{headline}

{dateline} Flood waters swept through the river town of Varenna overnight, forcing more than two thousand \
residents from their homes, regional officials said on Tuesday.

The river rose by four metres in less than six hours after three days of heavy rain in the hills above the town, \
according to the regional water authority. Rescue teams used boats to reach families trapped on the upper floors \
of their houses.

"We have never seen the water climb this fast," said mayor Elena Ross, who spent the night at the emergency \
centre set up in the town's secondary school. She said no deaths had been reported, but that two people were \
taken to hospital with injuries.

The authority said the main bridge into Varenna would stay closed until engineers could inspect its pillars. \
Trains between the town and the regional capital were suspended, and the national railway said buses would \
replace them from Wednesday morning.

Forecasters expect more rain on Thursday. The regional government has asked the army to send two hundred \
soldiers to help build barriers of sandbags along the lower streets.

{ending}
"""
COST = "Insurers said it was too early to estimate the cost of the damage."

# the wire's own copy; a copy with another headline and dateline, a sentence reworded and another last one; a
# copy with another headline and dateline
DESK = WIRE.format(headline="Floods force thousands from homes in Varenna",
                   dateline="VARENNA, 6 October 2020 (Desk Wire) -", ending=COST)
VALLEY = WIRE.format(
    headline="Thousands flee as river bursts its banks in Varenna",
    dateline="(Valley Times / Desk Wire - 6 October 2020)",
    ending="The town last flooded in 1994, when the river rose by three metres.",
).replace("Rescue teams used boats to reach families trapped on the upper floors of their houses.",
          "Firefighters in boats rescued families stranded on the upper floors of their homes.")
COURIER = WIRE.format(headline="Varenna floods: two thousand evacuated", dateline="VARENNA (Northern Courier) -",
                      ending=COST)

# another story of the same flood, by one of the same outlets, the day after
DAY_AFTER = """Varenna counts the cost after the flood

VARENNA, 7 October 2020 (Northern Courier) - A day after the river burst its banks, shopkeepers in Varenna began \
clearing mud from their floors on Wednesday while the water slowly went down.

Many of the town's two thousand evacuated residents spent a second night with relatives or in the secondary \
school, where volunteers served hot meals. Mayor Elena Ross said the town would need weeks to recover.

The regional water authority said the river had started to fall but warned that more rain was expected on \
Thursday. Soldiers sent by the regional government were filling sandbags along the lower streets.

Farmers in the valley said the flood had destroyed much of the maize harvest. "Everything below the road is \
gone," said one grower, whose fields lie beside the river.

Engineers inspecting the main bridge found cracks in one of its pillars, and the bridge will remain closed for at \
least a month, the authority said. Buses replaced trains to the regional capital.
"""

RISE_Q = "How many metres did the river rise in Varenna?"
COPIES = {"desk-wire": "Desk Wire", "valley-times": "Valley Times", "northern-courier": "Northern Courier"}


def article(text: str, source: str, published: str) -> str:
    title = text.split("\n", 1)[0]
    return f"---\ntitle: {title}\nsource: {source}\npublished: {published}\n---\n{text}"


def write_stories(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "desk-wire.txt").write_text(article(DESK, "Desk Wire", "2020-10-06"), encoding="utf-8")
    (folder / "valley-times.txt").write_text(article(VALLEY, "Valley Times", "2020-10-06"), encoding="utf-8")
    (folder / "northern-courier.txt").write_text(article(COURIER, "Northern Courier", "2020-10-07"),
                                                 encoding="utf-8")
    (folder / "day-after.txt").write_text(article(DAY_AFTER, "Northern Courier", "2020-10-07"), encoding="utf-8")
    return folder


def ok(*args: str, home: Path, status: int = 0) -> str:
    proc = run_cli(*args, home=home)
    assert proc.returncode == status, proc.stderr
    return proc.stdout


def groups(home: Path) -> dict[str, str]:
    """Article id -> its group, as `newsdesk list --json` shows them."""
    return {row["id"]: row["group"] for row in json.loads(ok("list", "--json", home=home))}


def ask(home: Path, question: str = RISE_Q) -> dict:
    return json.loads(ok("ask", question, "--json", home=home))


# ---- the measure ----------------------------------------------------------------------------------------


def test_small_edits_are_the_same_story_and_another_story_of_the_event_is_not():
    """What ``dedup.THRESHOLD`` (0.5) was chosen between: copies with small edits 0.74-0.96, a copy cut after
    its third paragraph 0.60, another story of the same flood 0.04 (estimated: within the MinHash error)."""
    sig = {name: dedup.signature(text) for name, text in
           {"desk": DESK, "valley": VALLEY, "courier": COURIER, "other": DAY_AFTER,
            "cut": "\n\n".join(DESK.split("\n\n")[:4])}.items()}
    same = [dedup.similarity(sig["desk"], sig[n]) for n in ("valley", "courier", "cut")]
    same.append(dedup.similarity(sig["valley"], sig["courier"]))
    assert min(same) >= dedup.THRESHOLD + 0.05, same
    apart = [dedup.similarity(sig[n], sig["other"]) for n in ("desk", "valley", "courier")]
    assert max(apart) <= 0.15, apart
    assert dedup.signature("Headline\n\nToo short to tell one story from another.") == ""  # never grouped


def test_groups_kept_up_by_each_run_are_the_groups_of_a_clean_index():
    """A run computes again only the groups its articles touch (``grouped_after``): after any sequence of
    writes (new copies, edited ones) and removals the groups are exactly those computed from scratch."""
    import random
    from types import SimpleNamespace

    rng = random.Random(7)
    words = (DESK + " " + DAY_AFTER).split()

    def story(seed: int) -> str:
        base = words[:]
        random.Random(seed).shuffle(base)
        base = base[:150]
        for _ in range(rng.randrange(60)):  # from a copy to another story
            base[rng.randrange(len(base))] = f"w{rng.randrange(10**6)}"
        return "Headline\n" + " ".join(base)

    registry: dict[str, dict] = {}
    for step in range(60):
        batch = {}
        for _ in range(rng.randrange(1, 4)):
            article_id = f"a{rng.randrange(30)}"
            batch[article_id] = SimpleNamespace(id=article_id, text=story(rng.randrange(4)), title="t",
                                                source=f"S{rng.randrange(5)}",
                                                published=rng.choice(["", f"2020-10-0{rng.randrange(1, 9)}"]))
        records, _, grouped = dedup.plan(registry, list(batch.values()), now=float(step))
        assert grouped == dedup.group_fields(records)
        registry = {a: {**r, **grouped[a]} for a, r in records.items()}
        gone = set(rng.sample(sorted(registry), k=min(len(registry), rng.randrange(3))))
        after = {a: r for a, r in registry.items() if a not in gone}
        regrouped = dedup.grouped_after(after, registry, gone)
        assert regrouped == dedup.group_fields(after)
        registry = {a: {**r, **regrouped[a]} for a, r in after.items()}
    assert len({r["group"] for r in registry.values()}) < len(registry)  # copies were grouped


# ---- one group, one cited passage ------------------------------------------------------------------------


def test_three_outlets_are_one_group_and_the_answer_cites_the_earliest_copy(tmp_path):
    docs, home = write_stories(tmp_path / "docs"), tmp_path / "home"
    ok("index", str(docs), "--fast", home=home)

    assert groups(home) == {"desk-wire": "desk-wire", "valley-times": "desk-wire",
                            "northern-courier": "desk-wire", "day-after": "day-after"}
    lines = ok("list", home=home).splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("desk-wire  "))
    assert lines[head + 1].startswith("  also: valley-times  Thousands flee")  # the same date, then by id
    assert lines[head + 2].startswith("  also: northern-courier  Varenna floods")
    assert sum(line.startswith("  also: ") for line in lines) == 2  # the day-after story stands alone

    answer = ask(home)
    cited = [c for c in answer["citations"] if c["article_id"] in COPIES]
    assert cited and {c["article_id"] for c in cited} == {"desk-wire"}  # one copy: the earliest
    assert all(c["quote"] in DESK for c in cited)
    assert len({c["quote"] for c in answer["citations"]}) == len(answer["citations"])  # no quote twice
    assert all(c["also"] == ["Valley Times", "Northern Courier"] for c in cited)
    text = ok("ask", RISE_Q, home=home)
    assert "Desk Wire, 2020-10-06 (also reported by Valley Times, Northern Courier)" in text

    hits = json.loads(ok("search", "bridge closed engineers pillars", "--k", "5", "--json", home=home))["hits"]
    assert {h["article_id"] for h in hits} == {"desk-wire", "day-after"}  # one copy of the story: the earliest
    assert len({h["text"] for h in hits}) == len(hits) == 5  # no passage twice
    day_after = next(h for h in hits if h["article_id"] == "day-after")
    assert day_after["also"] == []


def test_a_written_answer_says_who_else_reported_the_story(tmp_path, fake):
    """LLM mode: the model cites the passage it was given, and the answer names the other outlets too."""
    from tests.fake_openai import Reply

    docs, home = write_stories(tmp_path / "docs"), tmp_path / "home"
    ok("index", str(docs), "--fast", home=home)
    hits = Index(make_settings(home)).search(RISE_Q, 5)
    assert len({h.text for h in hits}) == len(hits)  # the model is given no passage twice
    n = next(i for i, h in enumerate(hits, 1) if "four metres" in h.text)
    assert hits[n - 1].article_id == "desk-wire"
    reply = Reply({"answerable": True, "sentences": [
        {"text": "The river rose by four metres in less than six hours.",
         "citations": [{"source": n, "quote": "The river rose by four metres in less than six hours"}]}]})
    fake.script(reply, reply)
    env = {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": fake.base_url, "NEWSDESK_LLM_MODEL": "fake-model"}
    proc = run_cli("ask", RISE_Q, "--json", home=home, env=env)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["mode"] == "llm"
    assert [(c["article_id"], c["also"]) for c in data["citations"]] == [
        ("desk-wire", ["Valley Times", "Northern Courier"])]
    text = run_cli("ask", RISE_Q, home=home, env=env).stdout
    assert "— Desk Wire, 2020-10-06 (also reported by Valley Times, Northern Courier)\n" in text


# ---- stable groups --------------------------------------------------------------------------------------


@pytest.mark.slow  # five index runs and three answers: ~12 s
def test_groups_stay_across_reindexing_and_follow_removals_and_earlier_copies(tmp_path):
    docs, home = write_stories(tmp_path / "docs"), tmp_path / "home"
    ok("index", str(docs), "--fast", home=home)
    first = ok("list", home=home)

    assert ok("index", str(docs), "--fast", home=home).startswith("0 added, 0 updated, 4 unchanged")
    assert ok("list", home=home) == first
    # a copy edited again (another last sentence) stays in its group
    courier = docs / "northern-courier.txt"
    courier.write_text(courier.read_text(encoding="utf-8").replace(COST, "Schools in Varenna will stay shut."),
                       encoding="utf-8")
    assert ok("index", str(docs), "--fast", home=home).startswith("0 added, 1 updated, 3 unchanged")
    assert ok("list", home=home) == first

    # the earliest copy removed: the next one by date heads the group
    (docs / "desk-wire.txt").unlink()
    assert "1 removed" in ok("index", str(docs), "--fast", "--prune", home=home)
    assert groups(home) == {"valley-times": "valley-times", "northern-courier": "valley-times",
                            "day-after": "day-after"}
    cited = [c for c in ask(home)["citations"] if c["article_id"] in COPIES]
    assert cited and {c["article_id"] for c in cited} == {"valley-times"}
    assert all(c["also"] == ["Northern Courier"] for c in cited)

    # a copy dated earlier than every other comes in: it heads the group, the others name it
    (docs / "early-bird.txt").write_text(article(DESK.replace("Desk Wire", "Early Bird"), "Early Bird",
                                                 "2020-10-05"), encoding="utf-8")
    ok("index", str(docs), "--fast", home=home)
    assert groups(home) == {"early-bird": "early-bird", "valley-times": "early-bird",
                            "northern-courier": "early-bird", "day-after": "day-after"}
    cited = [c for c in ask(home)["citations"] if c["article_id"] in {*COPIES, "early-bird"}]
    assert {c["article_id"] for c in cited} == {"early-bird"}
    assert all(c["also"] == ["Valley Times", "Northern Courier"] for c in cited)


def test_groups_left_half_updated_are_put_right_by_the_next_run(tmp_path):
    """What a run killed after writing its articles but before updating the others' groups leaves (records
    naming a group whose head is gone, ``also`` lists that name the wrong outlets) is found by the next run,
    even one with nothing to write, and made what a clean run gives."""
    docs, home = write_stories(tmp_path / "docs"), tmp_path / "home"
    ok("index", str(docs), "--fast", home=home)
    want = ok("list", home=home)
    index = Index(make_settings(home))
    try:
        index.store.update_articles({"valley-times": {"group": "gone", "also": "[]"},
                                     "northern-courier": {"group": "northern-courier", "also": '["Nobody"]'}})
    finally:
        index.close()
    assert ok("list", home=home) != want
    assert ok("index", str(docs), "--fast", home=home).startswith("0 added, 0 updated, 4 unchanged")
    assert ok("list", home=home) == want
    cited = [c for c in ask(home)["citations"] if c["article_id"] in COPIES]
    assert cited and all(c["also"] == ["Valley Times", "Northern Courier"] for c in cited)


def test_an_index_from_before_groups_gets_them_without_reindexing_its_articles(tmp_path):
    """Records written before near-duplicates were grouped (no signature, no group) are given theirs, from
    their stored text, by the next run, which writes no article again."""
    docs, home = write_stories(tmp_path / "docs"), tmp_path / "home"
    ok("index", str(docs), "--fast", home=home)
    want = ok("list", home=home)
    index = Index(make_settings(home))
    try:
        index.store.update_articles({a: {"minhash": None, "first_indexed": None, "group": None, "also": None}
                                     for a in [*COPIES, "day-after"]})  # (None: the field is deleted)
        assert all("minhash" not in r and "group" not in r for r in index.store.articles().values())
    finally:
        index.close()
    assert len(set(groups(home).values())) == 4  # each article alone
    assert ok("index", str(docs), "--fast", home=home).startswith("0 added, 0 updated, 4 unchanged")
    assert ok("list", home=home) == want


# ---- kill -9 while copies are written ---------------------------------------------------------------------


def write_copies(folder: Path, n: int) -> Path:
    """``n`` copies of the wire story, each from its own outlet and dated a day apart (so that which copy is
    the earliest never depends on when it was indexed), each with its own last sentence."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        outlet = f"Outlet {i:02d}"
        text = WIRE.format(headline=f"Floods in Varenna ({outlet})", dateline=f"VARENNA ({outlet}) -",
                           ending=f"{outlet} will publish updates through the night, desk number {i}.")
        day = time.strftime("%Y-%m-%d", time.gmtime(1601510400 + 86400 * i))  # from 2020-10-01
        (folder / f"copy-{i:02d}.txt").write_text(article(text, outlet, day), encoding="utf-8")
    return folder


@pytest.mark.slow  # a real `newsdesk index` process killed, then two more runs: ~25 s
def test_kill_while_indexing_copies_then_rerun_gives_a_clean_index(tmp_path):
    from tests.test_crash import FakeOpenAI, cli, kill_when, registry, start_index, state

    with FakeOpenAI() as fake:
        env = {"NEWSDESK_EMBEDDER": "openai", "OPENAI_BASE_URL": fake.base_url, "OPENAI_API_KEY": "sk-test",
               "NEWSDESK_ACCURATE": "off", "NEWSDESK_EMBED_BATCH": "4"}
        docs, home = write_copies(tmp_path / "docs", 200), tmp_path / "home"
        proc = start_index([str(docs), "--fast"], home, env)
        assert kill_when(proc, lambda: 0 < len(registry(home, env)) < 200), "the run ended before it was killed"
        got = state(home, env)
        assert all(a in got["live"] and got["article_texts"][a] for a in got["articles"])  # no article half-there
        cli("index", str(docs), "--fast", "--json", home=home, env=env)
        fresh = tmp_path / "fresh"
        cli("index", str(docs), "--fast", "--json", home=fresh, env=env)
        after, clean = (json.loads(cli("list", "--json", home=h, env=env).stdout) for h in (home, fresh))
        assert after == clean
        assert {row["group"] for row in after} == {"copy-00"}  # one story: the earliest copy heads it
        got, want = state(home, env), state(fresh, env)
        assert got["articles"] == want["articles"] and got["raw"] == want["raw"]
