"""Near-duplicate stories: the same story republished by several outlets is one group.

Two articles are the same story when the Jaccard similarity of their word shingles (``SHINGLE`` consecutive
words of the normalised text, the headline line left out: outlets retitle a wire story) is at least
``THRESHOLD``, estimated with MinHash signatures (datasketch, ``NUM_PERM`` permutations, a fixed seed: the same
text always gets the same signature) and found with MinHash LSH, so that grouping N articles never compares
every pair. Groups are the connected components of "same story". Measured (``tests/test_dedup.py``' stories,
3-word shingles): a wire story and its copies with a changed sentence, another headline and dateline, another
last sentence: 0.74-0.96; a copy cut after its third paragraph: 0.60; another story about the same flood, by
one of the same outlets, a day later: 0.04; any two of the 24 XQuAD English articles: at most 0.006.

Each article's signature is kept in its registry record (``minhash``, base64 of the 32-bit hash values; ""
for a text too short to compare, which is never grouped), written with the article, so that a new article is
compared with the others without reading their texts. The record also keeps ``first_indexed`` (when the
article was first written; kept when it is updated), ``group`` (the id of the group's head: its earliest
article by published date, then first indexed, then id; an article alone is its own group) and ``also`` (the
other members' outlets, JSON: what an answer citing it says it was "also reported by").

``group`` and ``also`` follow from the signatures alone (``assign``): the indexer computes them for what it
writes, and after every run it recomputes every group from the registry it already read and updates the
records whose group changed (``regroup``): an article removed re-forms its group, a new earlier copy becomes
the head. A run killed half-way leaves a few records naming an old group; the next run puts them right.

Every copy is stored and embedded as it is (its passages stay searchable, including what only it says). Chroma's
HNSW index then holds identical vectors: asked with its own vector for its nearest passage, a passage finds a
copy of itself instead (``python -m bench.dedup_vectors --n 1``: 51 of 120 passages of 6 stories x 4 copies
are not found by their own vector; one copy per story: 0 of 30), but the passage found is always the same
passage of another copy of the story (120 of 120), which is what folding shows as one. So copies are not left
out of the vector index: that would lose what only a copy says and make every removal of a head re-embed.
Search shows the passages of one copy per group (``fold``): the head's when it has a passage about as good as
the best, so that the answer cites the earliest copy and names the others' outlets ("also reported by").

Cost: a run that writes compares its articles with every signature at once (numpy) and groups again only the
groups they touch (``grouped_after``: measured 0.36 s for one new article against 10,000 on a busy 2-core
machine, mostly the consistency check of the stored groups); a run that writes nothing only checks that the
stored groups agree (``consistent``: 0.19 s at 10,000).
"""

from __future__ import annotations

import base64
import json
import logging
import re
import time
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from .textnorm import normalize

if TYPE_CHECKING:
    from datasketch import LeanMinHash

log = logging.getLogger(__name__)


def _datasketch():
    """datasketch, imported when a signature is made or compared (its LSH imports scipy: ~0.35 s that a search,
    which only reads the groups already stored, does not need)."""
    import datasketch

    return datasketch

SHINGLE = 3  # words per shingle
NUM_PERM = 128  # MinHash permutations (the Jaccard estimate's standard error at 0.5: 0.044)
SEED = 1
SCHEME = "affine32"  # datasketch's permutation scheme (named: a signature must mean the same in every version)
THRESHOLD = 0.5  # Jaccard similarity from which two articles are the same story
MIN_SHINGLES = 20  # a text with fewer distinct shingles is never grouped (too little to tell)
ALSO_KEPT = 10  # outlets named in ``also`` at most
HEAD_MARGIN = 0.5  # fold: the head's passage is shown when it scores within this much of the group's best

# scripts written without spaces between words: each character is a token
_NO_SPACE = "\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_TOKEN = re.compile(f"[{_NO_SPACE}]|[^\\W{_NO_SPACE}]+")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def tokens(text: str) -> list[str]:
    """The words of ``text``, normalised (``textnorm.normalize``, lower case), the first line (the headline)
    left out when more follows."""
    first, sep, rest = text.strip().partition("\n")
    body = rest if sep and rest.strip() else first
    return _TOKEN.findall(normalize(body).lower())


def shingles(text: str) -> set[bytes]:
    words = tokens(text)
    return {" ".join(words[i:i + SHINGLE]).encode("utf-8") for i in range(len(words) - SHINGLE + 1)}


def signature(text: str) -> str:
    """The MinHash signature of ``text``, base64 (what the registry keeps); "" when the text is too short to
    be compared."""
    grams = shingles(text)
    if len(grams) < MIN_SHINGLES:
        return ""
    minhash = _datasketch().MinHash(num_perm=NUM_PERM, seed=SEED, scheme=SCHEME)
    minhash.update_batch(sorted(grams))
    return base64.b64encode(np.asarray(minhash.hashvalues, dtype="<u4").tobytes()).decode("ascii")


def _minhash(encoded: str) -> LeanMinHash | None:
    """The signature kept in a record, or None (none, too short, or not one of ours)."""
    try:
        values = np.frombuffer(base64.b64decode(encoded, validate=True), dtype="<u4")
    except ValueError:
        return None
    if len(values) != NUM_PERM:
        return None
    return _datasketch().LeanMinHash(seed=SEED, hashvalues=values.astype(np.uint64), scheme=SCHEME)


def similarity(a: str, b: str) -> float:
    """The estimated Jaccard similarity of two signatures (0 when either is missing)."""
    ma, mb = _minhash(a), _minhash(b)
    return float(ma.jaccard(mb)) if ma is not None and mb is not None else 0.0


def order_key(article_id: str, record: Mapping) -> tuple:
    """Earliest first: by published date (an ISO date; none or another text after every date), then by when
    it was first indexed, then by id."""
    published = str(record.get("published") or "")
    date = published[:10] if _DATE.match(published) else "9999-99-99"
    return date, float(record.get("first_indexed") or 0.0), article_id


def assign(records: Mapping[str, Mapping]) -> dict[str, str]:
    """Article id -> the id of its group's head, for every record (see the module docstring)."""
    signatures = {a: m for a in sorted(records) if (m := _minhash(str(records[a].get("minhash") or "")))}
    lsh = _datasketch().MinHashLSH(threshold=THRESHOLD, num_perm=NUM_PERM, params=_bands())
    parent = {a: a for a in records}

    def root(a: str) -> str:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for article_id, minhash in signatures.items():
        for other in lsh.query(minhash):
            if minhash.jaccard(signatures[other]) >= THRESHOLD:
                parent[root(article_id)] = root(other)
        lsh.insert(article_id, minhash)
    members: dict[str, list[str]] = {}
    for article_id in records:
        members.setdefault(root(article_id), []).append(article_id)
    out = {}
    for group in members.values():
        head = min(group, key=lambda a: order_key(a, records[a]))
        out.update({a: head for a in group})
    return out


def outlet(article_id: str, record: Mapping) -> str:
    """How an answer names the outlet of an article: its source, else its title, else its id."""
    return str(record.get("source") or record.get("title") or article_id)


def _fields(records: Mapping[str, Mapping], groups: Mapping[str, str]) -> dict[str, dict]:
    """Article id -> its ``group`` (the head: the earliest member) and ``also`` (the other members' outlets,
    earliest first, each once, never its own, at most ``ALSO_KEPT``), for the grouping ``groups`` (article id
    -> any id naming its group)."""
    members: dict[str, list[str]] = {}
    for article_id in sorted(records, key=lambda a: order_key(a, records[a])):
        members.setdefault(groups.get(article_id) or article_id, []).append(article_id)
    out = {}
    for group in members.values():
        if len(group) == 1:  # (most articles: no json to write)
            out[group[0]] = {"group": group[0], "also": "[]"}
            continue
        names = list(dict.fromkeys(outlet(a, records[a]) for a in group))
        for article_id in group:
            own = outlet(article_id, records[article_id])
            also = [n for n in names if n != own][:ALSO_KEPT]
            out[article_id] = {"group": group[0], "also": json.dumps(also, ensure_ascii=False)}
    return out


def group_fields(records: Mapping[str, Mapping]) -> dict[str, dict]:
    """Article id -> its ``group`` and ``also`` fields, computed from the signatures, for every record."""
    return _fields(records, assign(records))


def also_reported(record: Mapping) -> list[str]:
    """The outlets a registry record says also reported its story ([] for none, or a record from before)."""
    try:
        names = json.loads(str(record.get("also") or "[]"))
    except ValueError:
        return []
    return [str(n) for n in names] if isinstance(names, list) else []


def _differs(record: Mapping, fields: Mapping) -> bool:
    return record.get("group") != fields["group"] or str(record.get("also") or "[]") != fields["also"]


def consistent(records: Mapping[str, Mapping]) -> bool:
    """Whether the records' stored groups agree with each other (no signature compared: a cheap check, made
    after a run that wrote and removed nothing): every group's head indexed and its earliest member, every
    ``also`` naming the group's other outlets. A run killed between its writes and ``regroup`` fails it."""
    stored = {a: str(r.get("group") or "") for a, r in records.items()}
    if any(not g or stored.get(g) != g for g in stored.values()):
        return False
    want = _fields(records, stored)
    return not any(_differs(records[a], want[a]) for a in records)


def _signatures(records: Mapping[str, Mapping]) -> tuple[list[str], np.ndarray]:
    """The ids of the records that have a signature, and their hash values (one row each)."""
    ids, rows = [], []
    for article_id, record in records.items():
        try:
            raw = base64.b64decode(str(record.get("minhash") or ""), validate=True)
        except ValueError:
            continue
        if len(raw) == 4 * NUM_PERM:
            ids.append(article_id)
            rows.append(raw)
    matrix = np.frombuffer(b"".join(rows), dtype="<u4").reshape(len(rows), NUM_PERM).astype(np.uint64)
    return ids, matrix


@lru_cache(maxsize=1)
def _bands() -> tuple[int, int]:
    """The LSH's bands and rows per band (what datasketch chooses for THRESHOLD and NUM_PERM)."""
    lsh = _datasketch().MinHashLSH(threshold=THRESHOLD, num_perm=NUM_PERM)
    return lsh.b, lsh.r


def _similar(matrix: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Which rows of ``matrix`` are "the same story" as the signature ``values``, by exactly the test ``assign``
    makes: an LSH candidate (one band of rows equal) whose estimated Jaccard similarity reaches THRESHOLD."""
    bands, rows = _bands()
    width = bands * rows
    candidate = (matrix[:, :width].reshape(len(matrix), bands, rows)
                 == values[:width].reshape(bands, rows)).all(axis=2).any(axis=1)
    return candidate & (np.count_nonzero(matrix == values, axis=1) >= THRESHOLD * NUM_PERM)


def grouped_after(records: Mapping[str, Mapping], before: Mapping[str, Mapping], touched: set[str]
                  ) -> dict[str, dict]:
    """The group fields of every record of ``records`` (the registry after a change) when ``before`` (the
    registry before it, with its group fields) was consistent and only ``touched`` changed (written, removed):
    only the groups a touched article was in, or is now similar to, are computed again (every other group is
    a component that no changed similarity reaches); the touched articles are compared with every signature at
    once (numpy), and the groups concerned grouped as ``group_fields`` does. Otherwise all of it is computed."""
    if not consistent(before):
        return group_fields(records)
    concerned = {str(before[a].get("group")) for a in touched if a in before}
    ids, matrix = _signatures(records)
    for article_id in touched & set(records):
        concerned.add(article_id)
        minhash = _minhash(str(records[article_id].get("minhash") or ""))
        if minhash is not None and len(ids):
            similar = _similar(matrix, minhash.hashvalues)
            concerned.update(str(before[o].get("group")) if o in before and o not in touched else o
                             for o, hit in zip(ids, similar) if hit)
    members = {a for a in records if a in concerned or (a in before and a not in touched
                                                          and str(before[a].get("group")) in concerned)}
    out = {a: {"group": str(before[a].get("group")), "also": str(before[a].get("also") or "[]")}
           for a in records if a not in members}
    out.update(group_fields({a: records[a] for a in members}))
    return out


def plan(registry: Mapping[str, Mapping], articles: Sequence, now: float | None = None
         ) -> tuple[dict[str, dict], dict[str, dict], dict[str, dict] | None]:
    """Before a run writes ``articles`` (``index.types.Article``): (the registry as it will be, the registry
    fields to write with each of them: signature, first indexed (kept from the record it replaces), group and
    ``also``; and the group fields of every record, None when there is nothing to write)."""
    if not articles:
        return dict(registry), {}, None
    now = time.time() if now is None else now
    records = dict(registry)
    for article in articles:
        old = registry.get(article.id) or {}
        records[article.id] = {**old, "source": article.source or "", "title": article.title or "",
                               "published": article.published or "", "minhash": signature(article.text),
                               "first_indexed": float(old.get("first_indexed") or now)}
    grouped = grouped_after(records, registry, {a.id for a in articles})
    fields = {}
    for article in articles:
        record = records[article.id]
        record.update(grouped[article.id])
        fields[article.id] = {name: record[name] for name in ("minhash", "first_indexed", "group", "also")}
    return records, fields, grouped


def regroup(store, records: dict[str, dict], grouped: Mapping[str, dict] | None = None,
            removed: Sequence[str] = (), force: bool = False) -> int:
    """After a run: update the records whose group is not what it should be; how many. ``records``: the
    registry as the run left it, the ``removed`` articles included (they are left out here: their groups are
    formed again); ``grouped``: the group fields ``plan`` computed (None: nothing was written). Records of an
    older store without a signature get one, computed from their text (once); stored groups that are not
    ``consistent`` (a run killed before it updated them), and all of them when ``force``, are computed again
    from the signatures."""
    gone = set(removed)
    state = {a: {**r, **(grouped or {}).get(a, {})} for a, r in records.items()}  # before the removals
    after = {a: r for a, r in records.items() if a not in gone}
    legacy = {a: signature(store.article_text(a) or "") for a, r in after.items() if "minhash" not in r}
    for article_id, encoded in legacy.items():
        after[article_id] = {**after[article_id], "minhash": encoded, "first_indexed": 0.0}
    if force or legacy:
        wanted = group_fields(after)
    elif gone:
        wanted = grouped_after(after, state, gone)
    elif grouped is not None:
        wanted = dict(grouped)
    elif consistent(after):
        return 0
    else:
        wanted = group_fields(after)
    updates = {a: dict(f) for a, f in wanted.items() if a in after and _differs(after[a], f)}
    for article_id, encoded in legacy.items():
        updates.setdefault(article_id, dict(wanted[article_id])).update(minhash=encoded, first_indexed=0.0)
    if updates:
        log.info("near-duplicate groups: %d article records updated", len(updates))
        store.update_articles(updates)
    return len(updates)


def fold(fused: Sequence[tuple[float, str]], owner: Mapping[str, str], groups: Mapping[str, str]
         ) -> list[tuple[float, str]]:
    """The passages of one copy per story, from ``fused`` ((score, passage id), best first; ``owner``: passage
    id -> article id; ``groups``: article id -> group id): the head's (the answer cites the earliest copy) when
    its best passage scores within ``HEAD_MARGIN`` of the group's best, else the copy of the best passage. The
    passages of the other copies (the same text again, mostly) are left out; an article alone keeps them all."""
    best: dict[str, tuple[float, str]] = {}  # group -> (best score, its article)
    head: dict[str, float] = {}  # group -> the head's best score
    for score, cid in fused:
        article_id = owner[cid]
        group = groups.get(article_id) or article_id
        best.setdefault(group, (score, article_id))
        if article_id == group:
            head.setdefault(group, score)
    chosen = {group: group if group in head and head[group] >= score - HEAD_MARGIN else article_id
              for group, (score, article_id) in best.items()}
    return [(score, cid) for score, cid in fused
            if chosen[groups.get(owner[cid]) or owner[cid]] == owner[cid]]
