"""Search latency and memory vs corpus size, embedded Chroma vs a `chroma run` server, side by side.

    python -m bench.search_scale                        # 1k, 10k, 100k passages, both store modes (~15 min)
    python -m bench.search_scale --sizes 1000,10000,100000,1000000  # + 1M (over an hour: filling the store)
    python -m bench.search_scale --sizes 50 --quick     # smoke test (seconds)

What it does:

1. Encodes the 240 XQuAD paragraphs (Arabic and English, each with its title as context, as the indexer embeds
   them) once with both real encoders: USE (stage 1, 512-d) and e5-small (stage 2, 384-d). Cached in
   ``bench/out/cache/``.
2. Fills one store, size by size, through ``Store.write_articles`` and ``Store.add_accurate`` in batches (in a
   subprocess, embedded Chroma). Passage ``n`` is base paragraph ``n mod 240`` made unique by a closing
   sentence with the number ``n`` (``bench.common.unique_text``), grouped five to an article; its stage-1 and
   stage-2 vectors are the base paragraph's real vectors plus Gaussian noise of norm ``--noise`` (default 0.5,
   cosine ≈ 0.89 to the base vector), re-normalised. The same scheme at every size: up to 10k the texts are
   real paragraphs with (nearly) their real vectors; beyond, the store is filled with synthetic vectors near
   the real ones. Every passage has a stage-2 vector and latent terms (its base paragraph's real ones),
   so the fused path (USE + e5 + BM25 + latent terms) is what is measured (the sentence re-rank runs only
   without stage-2 vectors).
3. Measures search in a FRESH process per run (as a bot or CLI opening an existing index): ``Index(settings)``
   then ``Index.search(q, 5)`` for ``--questions`` real English XQuAD questions (query embedding included),
   after one warm-up search (reported separately as "first search": it loads e5 and loads the saved lexical
   index, or builds it when there is none or brings it up to date when the store changed since it was saved:
   the first run after filling the store to a new size does that). The embedders' caches are cleared before
   every question: the synthetic corpus repeats the base sentences, which would otherwise be cache hits that
   a corpus of distinct articles would not give.
   Runs alternate embedded / server (a fresh ``chroma run --path`` on the same files for each server run).
4. Memory: RSS (psutil) of the search process after the questions, and its peak; in server mode, of the
   client process and the ``chroma run`` process separately.

The report has p50/p95 (medians over runs), the memory table, and where the time goes (per-question means of
each step, measured by wrapping the Index's methods).

1M is not in the default sizes because filling the store takes over an hour on 2 cores (the last 900k
passages: 60–65 min on an idle machine, longer when it is busy). ``--scratch DIR`` keeps the store;
``--reuse`` fills a kept store on from its size, so a stopped fill need not start again:

    python -m bench.search_scale --sizes 1000000 --scratch DIR --reuse
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import resource
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from bench.common import (
    CACHE,
    DEFAULT_OUT,
    ChromaServer,
    base_paragraphs,
    clean_env,
    command_line,
    english_questions,
    fmt,
    load_1min,
    log,
    machine_info,
    machine_note,
    markdown_table,
    median,
    module_cmd,
    percentile,
    pyplot,
    run_json,
    unique_text,
    wait_for_quiet,
    write_report,
)

COLD = ["open_s", "models_s", "chroma_s", "first_search_s", "rss_open_mb", "rss_models_mb", "rss_chroma_mb",
        "rss_first_mb"]
PER_ARTICLE = 5
WRITE_BATCH = 400  # articles per write_articles call (2,000 passages)
K = 5
STEPS = [  # (label, what it covers), in the order of the breakdown table
    ("query embedding (USE)", "stage-1 query vector"),
    ("query embedding (e5)", "stage-2 query vector"),
    ("Chroma: USE top-50", "HNSW query, ids and distances"),
    ("Chroma: e5 top-50", "HNSW query on the accurate collection, ids and distances"),
    ("query latent terms (e5)", "the question's latent terms: a second e5 pass, beside the USE encoding"),
    ("Chroma: fetch missing vectors", "stored vectors of candidates one ranker did not return"),
    ("Chroma: latent terms", "the stored latent terms of the candidates of the articles that own the first "
     "places (metadata: the slow kind of read)"),
    ("Chroma: texts and titles", "texts of the passages returned, their articles' titles"),
    ("Chroma: checks", "the embedder check; every 2 s the generation token and whether stage 2 exists"),
    ("BM25 scoring", "in-memory lexical top-50 over the postings of the query terms"),
    ("sentence re-rank", "USE on the sentences of the top 3 passages (only without stage 2)"),
    ("lexical index update", "Searcher.sync: only when the articles changed"),
    ("fusion and other Python", "the rest of Searcher.rank/search (0 when the overlapping steps add up to more)"),
]


# -- step 1: base vectors ------------------------------------------------------------------------------------

def base_vectors(n_base: int, cache_dir: Path) -> Path:
    """The real USE and e5 passage vectors of the first ``n_base`` XQuAD paragraphs (title as context), and
    the packed e5 latent terms of their texts (``index.terms``, as stage 2 stores them)."""
    from newsdesk.index.indexer import embed_text

    bases = base_paragraphs(n_base)
    texts = [embed_text(b.title, b.text) for b in bases]
    key = hashlib.sha256("\x00".join(texts).encode()).hexdigest()[:16]
    path = cache_dir / f"base-vectors-terms-{key}.npz"
    if path.exists():
        return path
    import numpy as np

    from newsdesk.index.embedding import E5Embedder, UseEmbedder

    log(f"encoding {len(texts)} base paragraphs with USE and e5 (once; cached in {path})")
    started = time.perf_counter()
    use = UseEmbedder().passages(texts)
    e5_model = E5Embedder()
    e5 = np.vstack([e5_model.passages(texts[i:i + 16]) for i in range(0, len(texts), 16)])
    from newsdesk.index.terms import pack

    terms = np.array([pack(t) for t in e5_model.terms([b.text for b in bases], bulk=True)] if e5_model.has_terms
                     else [""] * len(bases))
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.savez(path, use=use, e5=e5, terms=terms)
    log(f"  done in {time.perf_counter() - started:.0f} s")
    return path


# -- step 2: filling the store (subprocess) ------------------------------------------------------------------

def _noisy(rng, base, noise: float):
    import numpy as np

    g = rng.standard_normal(base.shape).astype(np.float32) * (noise / math.sqrt(base.shape[1]))
    v = base + g
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def build(home: Path, start: int, stop: int, vectors_file: Path, noise: float) -> dict:
    """Add passages ``start``..``stop-1`` to the store at ``home`` (embedded Chroma)."""
    import numpy as np

    from newsdesk.index.settings import Settings
    from newsdesk.index.store import Store, StoredPassage, passage_id, version_tag
    from newsdesk.index.types import Article, Chunk

    vecs = np.load(vectors_file)
    use, e5, terms = vecs["use"], vecs["e5"], vecs["terms"]
    bases = base_paragraphs(len(use))
    if len(bases) % PER_ARTICLE:
        raise SystemExit(f"--base must be a multiple of {PER_ARTICLE}")
    store = Store(Settings.load(environ={"NEWSDESK_HOME": str(home)}, env_file=None))
    if start < 0:  # --reuse: go on from what the store holds
        # a fill that was stopped may have written a batch's passages but not their stage-2 vectors: remove
        # those articles, so that every passage has both vectors
        accurate = store.count("accurate")
        for a0 in range(accurate // PER_ARTICLE * PER_ARTICLE, store.count(), PER_ARTICLE):
            store.remove_article(f"a{a0 // PER_ARTICLE:07d}")
        start = store.count()
        if start > stop:
            raise SystemExit(f"the kept store holds {start:,} passages, more than {stop:,}")
    assert start % PER_ARTICLE == 0 and store.count() == start == store.count("accurate"), (start, store.count())
    started = time.perf_counter()
    stage1 = stage2 = 0.0
    for batch_start in range(start, stop, WRITE_BATCH * PER_ARTICLE):
        batch_stop = min(stop, batch_start + WRITE_BATCH * PER_ARTICLE)
        rng = np.random.default_rng(batch_start)
        ns = np.arange(batch_start, batch_stop)
        b = ns % len(bases)
        v1, v2 = _noisy(rng, use[b], noise), _noisy(rng, e5[b], noise)
        items, passages = [], []
        for a0 in range(batch_start, batch_stop, PER_ARTICLE):
            group = list(range(a0, min(a0 + PER_ARTICLE, batch_stop)))
            first = bases[group[0] % len(bases)]
            article_id = f"a{a0 // PER_ARTICLE:07d}"
            title = f"{first.title} ({a0 // len(bases) + 1})"
            text, chunks = title, []
            for j, n in enumerate(group):
                text += "\n\n"
                para = unique_text(bases[n % len(bases)], n)
                chunks.append(Chunk(id=f"{article_id}#{j}", article_id=article_id, index=j, text=para,
                                    start=len(text), end=len(text) + len(para)))
                text += para
            article = Article(id=article_id, title=title, text=text, source="bench", lang=first.lang,
                              origin=f"bench://{article_id}")
            rows = slice(group[0] - batch_start, group[-1] - batch_start + 1)
            items.append((article, chunks, v1[rows]))
            tag = version_tag(article, chunks)  # the ids the store writes them under
            passages.extend(StoredPassage(passage_id(article_id, c.index, tag), article_id, c.text, c.start, c.end)
                            for c in chunks)
        t = time.perf_counter()
        store.write_articles(items, "use-m3", use.shape[1])
        t2 = time.perf_counter()
        packed = [str(terms[n % len(bases)]) for n in ns]
        store.add_accurate(passages, v2, "e5-small", terms=packed if all(packed) else None)
        stage2 += time.perf_counter() - t2
        stage1 += t2 - t
        rate = (batch_stop - start) / (time.perf_counter() - started)
        log(f"  {batch_stop:,} passages written ({rate:.0f}/s)")
    return {"passages": store.count(), "accurate": store.count("accurate"), "added": stop - start,
            "seconds": time.perf_counter() - started, "write_articles_s": stage1, "add_accurate_s": stage2}


# -- step 3: measuring (fresh subprocess per run) ------------------------------------------------------------

def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def measure(home: Path, questions: list[str], warmup: str) -> dict:
    """Open the index as the CLI or the bot does and time ``Index.search``; print JSON."""
    started = time.perf_counter()
    from newsdesk.bot.startup import configure_process
    from newsdesk.index import lexical
    from newsdesk.index.service import Index
    from newsdesk.index.settings import Settings

    configure_process()  # the native libraries' thread settings, as the CLI and the bot start with

    index = Index(Settings.load(env_file=None))  # NEWSDESK_HOME / CHROMA_HOST come from the environment
    cold = {"open_s": time.perf_counter() - started, "rss_open_mb": _rss_mb()}
    generation = index.store.generation()
    path = index.searcher.lexical_file(generation)
    saved = lexical.BM25.saved_tag(path) if path is not None else None
    cold["lexical"] = ("built" if saved is None or saved.split(":")[0] != generation.split(":")[0]
                       else "loaded" if saved == generation else "updated")
    # the cold start, step by step: model weights, then the vector indexes, then the first search (which
    # loads, updates or builds the lexical index)
    t = time.perf_counter()
    qvec = index.embedder.queries([warmup])[0]
    avec = index.accurate.queries([warmup])[0] if index.accurate is not None else None
    cold.update(models_s=time.perf_counter() - t, rss_models_mb=_rss_mb())
    t = time.perf_counter()
    index.store.query_passages(qvec, 50)
    if avec is not None:
        index.store.query_accurate(avec, 50)
    cold.update(chroma_s=time.perf_counter() - t, rss_chroma_mb=_rss_mb())
    t = time.perf_counter()
    index.search(warmup, K)
    cold.update(first_search_s=time.perf_counter() - t, rss_first_mb=_rss_mb())

    spent: dict[str, float] = defaultdict(float)
    calls: dict[str, int] = defaultdict(int)

    def wrap(owner, name: str, label: str) -> None:
        fn = getattr(owner, name)

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[label] += time.perf_counter() - t0
                calls[label] += 1

        setattr(owner, name, timed)

    searcher, store = index.searcher, index.store
    wrap(index.embedder, "queries", "query embedding (USE)")
    if index.accurate is not None:
        wrap(index.accurate, "queries", "query embedding (e5)")
        wrap(index.accurate, "terms", "query latent terms (e5)")
    wrap(store, "query_passages", "Chroma: USE top-50")
    wrap(store, "query_accurate", "Chroma: e5 top-50")
    for name in ("get_accurate_vectors", "get_passage_vectors"):
        wrap(store, name, "Chroma: fetch missing vectors")
    wrap(store, "get_terms", "Chroma: latent terms")
    for name in ("get_passages", "article_meta"):
        wrap(store, name, "Chroma: texts and titles")
    for name in ("generation", "has_accurate", "stage2_state", "check_embedder"):
        wrap(store, name, "Chroma: checks")
    wrap(searcher, "_rerank_by_sentence", "sentence re-rank")
    wrap(lexical.BM25, "top", "BM25 scoring")
    wrap(searcher, "sync", "lexical index update")

    embedders = [e for e in (index.embedder, index.accurate) if e is not None]
    latencies = []
    for q in questions:
        for e in embedders:
            e._cache.clear()  # see the module docstring
        t0 = time.perf_counter()
        index.search(q, K)
        latencies.append((time.perf_counter() - t0) * 1000)
    total = sum(latencies)
    breakdown = {label: spent.get(label, 0.0) * 1000 / len(questions) for label, _ in STEPS[:-1]}
    breakdown[STEPS[-1][0]] = max(total / len(questions) - sum(breakdown.values()), 0.0)
    return {"passages": store.count(), "accurate": store.count("accurate"), **cold,
            "latencies_ms": latencies, "breakdown_ms": breakdown,
            "rebuilds": calls.get("lexical index update", 0), "rss_end_mb": _rss_mb(),
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_measure(home: Path, mode: str, n_questions: int, terms: bool = True) -> dict:
    args = module_cmd("bench.search_scale", "--measure", home, "--questions", n_questions)
    load = load_1min()
    extra = {} if terms else {"NEWSDESK_LATENT_TERMS": "0"}
    if mode == "embedded":
        out = run_json(args, clean_env(home, **extra))
    else:
        with ChromaServer(home / "chroma") as server:
            rss_idle = server.rss_mb()
            out = run_json(args, clean_env(home, **server.env(), **extra))
            out["server_rss_idle_mb"] = rss_idle
            out["server_rss_end_mb"] = server.rss_mb()
    out["load_before"], out["load_after"] = load, load_1min()
    return out


# -- report --------------------------------------------------------------------------------------------------

def summarise(runs: list[dict]) -> dict:
    lat = [r["latencies_ms"] for r in runs]
    out = {
        "runs": len(runs), "passages": runs[0]["passages"], "accurate": runs[0]["accurate"],
        "p50_ms": median(percentile(x, 50) for x in lat),
        "p95_ms": median(percentile(x, 95) for x in lat),
        "p99_ms": median(percentile(x, 99) for x in lat),
        "max_ms": max(max(x) for x in lat),
        "mean_ms": median(sum(x) / len(x) for x in lat),
        **{k: median(r[k] for r in runs) for k in COLD},
        "rebuilds": sum(r["rebuilds"] for r in runs),
        "client_rss_mb": median(r["rss_end_mb"] for r in runs),
        "client_peak_mb": median(r["peak_mb"] for r in runs),
        "breakdown_ms": {k: median(r["breakdown_ms"][k] for r in runs) for k in runs[0]["breakdown_ms"]},
        "p95_per_run_ms": [round(percentile(x, 95), 1) for x in lat],
        "load_per_run": [[round(r.get("load_before", 0), 2), round(r.get("load_after", 0), 2)]
                         for r in runs],
    }
    if "server_rss_end_mb" in runs[0]:
        out["server_rss_mb"] = median(r["server_rss_end_mb"] for r in runs)
        out["server_rss_idle_mb"] = median(r["server_rss_idle_mb"] for r in runs)
    return out


def _size_label(n: int) -> str:
    return f"{n // 1_000_000}M" if n >= 1_000_000 and n % 1_000_000 == 0 else (
        f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n))


def extrapolate(results: dict, sizes: list[int]) -> dict | None:
    """From the two largest measured sizes, a log-log projection per step and for memory to 1M passages."""
    measured = [s for s in sizes if "embedded" in results.get(s, {})]
    if len(measured) < 2 or measured[-1] >= 1_000_000:
        return None
    a, b = measured[-2], measured[-1]
    target = 1_000_000
    ra, rb = results[a]["embedded"], results[b]["embedded"]
    steps = {}
    for label, va in ra["breakdown_ms"].items():
        vb = rb["breakdown_ms"][label]
        if va > 0.05 and vb > 0.05:
            slope = math.log(vb / va) / math.log(b / a)
            steps[label] = {"at_b": vb, "slope": slope, "at_1m": vb * (target / b) ** max(slope, 0.0)}
        else:
            steps[label] = {"at_b": vb, "slope": 0.0, "at_1m": vb}
    mem_slope = (rb["client_rss_mb"] - ra["client_rss_mb"]) / (b - a)  # MB per passage
    return {"from": [a, b], "steps": steps, "mean_ms_1m": sum(s["at_1m"] for s in steps.values()),
            "client_rss_mb_1m": rb["client_rss_mb"] + mem_slope * (target - b),
            "mb_per_1k_passages": mem_slope * 1000}


def report(results: dict, sizes: list[int], modes: list[str], builds: dict, args, info: dict,
           load_end: float) -> tuple[str, object, dict]:
    sizes = [s for s in sizes if s in results]
    has_server = "server" in modes
    rows = []
    for s in sizes:
        r = results[s]
        row = [_size_label(s)]
        for m in modes:
            row += [fmt(r[m]["p50_ms"]), fmt(r[m]["p95_ms"])]
        row += [fmt(max(r[m]["max_ms"] for m in modes), 0), ", ".join(str(r[m]["runs"]) for m in modes)]
        rows.append(row)
    headers = ["passages"]
    for m in modes:
        headers += [f"{m} p50 ms", f"{m} p95 ms"]
    headers += ["max ms (any mode)", "runs per mode"]
    latency = markdown_table(headers, rows)

    cold_rows = []
    for s in sizes:
        for m in modes:
            for n, c in enumerate(results[s][m]["raw"], start=1):
                total = c["open_s"] + c["models_s"] + c["chroma_s"] + c["first_search_s"]
                steps_mb = ("rss_open_mb", "rss_models_mb", "rss_chroma_mb", "rss_first_mb", "rss_end_mb")
                cold_rows.append([_size_label(s), m, str(n), c.get("lexical", "?"), fmt(c["open_s"], 1),
                                  fmt(c["models_s"], 1), fmt(c["chroma_s"], 1), fmt(c["first_search_s"], 1),
                                  f"**{fmt(total, 1)}**", " / ".join(fmt(c[k], 0) for k in steps_mb)])
    cold = markdown_table(["passages", "mode", "run", "saved lexical index", "open (imports, store), s",
                           "model weights, s", "vector indexes, s", "first search, s", "first answer after, s",
                           "RSS after each step + after the questions, MB"], cold_rows)

    mem_rows = []
    for s in sizes:
        r = results[s]
        row = [_size_label(s)]
        if "embedded" in r:
            row += [fmt(r["embedded"]["client_rss_mb"], 0), fmt(r["embedded"]["client_peak_mb"], 0)]
        if has_server and "server" in r:
            row += [fmt(r["server"]["client_rss_mb"], 0), fmt(r["server"]["server_rss_mb"], 0),
                    fmt(r["server"]["client_rss_mb"] + r["server"]["server_rss_mb"], 0)]
        mem_rows.append(row)
    mem_headers = ["passages"]
    if "embedded" in modes:
        mem_headers += ["embedded: process RSS, MB", "embedded: peak, MB"]
    if has_server:
        mem_headers += ["server mode: client RSS, MB", "server mode: `chroma run` RSS, MB",
                        "server mode: total, MB"]
    memory = markdown_table(mem_headers, mem_rows)

    big = sizes[-1]
    step_rows = []
    for label, what in STEPS:
        row = [label, what]
        for m in modes:
            row.append(fmt(results[big][m]["breakdown_ms"].get(label, 0.0), 1))
        step_rows.append(row)
    step_rows.append(["**total (mean)**", ""] + [f"**{fmt(results[big][m]['mean_ms'], 1)}**" for m in modes])
    steps = markdown_table(["step", "what", *[f"{m}, ms/question" for m in modes]], step_rows)
    growth_rows = []
    for label, _ in STEPS:
        growth_rows.append([label] + [fmt(results[s]["embedded"]["breakdown_ms"].get(label, 0.0), 1)
                                      for s in sizes if "embedded" in results[s]])
    growth = markdown_table(["step (embedded), ms/question", *[_size_label(s) for s in sizes
                                                                 if "embedded" in results[s]]], growth_rows)

    goals = []
    at100k = results.get(100_000, {}).get("embedded")
    if at100k:
        ok_lat = at100k["p95_ms"] <= 50
        ok_mem = at100k["client_rss_mb"] <= 1024
        goals.append(f"- p95 ≤ 50 ms at 100k embedded: **{'met' if ok_lat else 'missed'}** "
                     f"({at100k['p95_ms']:.1f} ms).")
        goals.append(f"- memory ≤ 1 GB at 100k: embedded process **{'met' if ok_mem else 'missed'}** "
                     f"({at100k['client_rss_mb']:.0f} MB RSS, peak {at100k['client_peak_mb']:.0f} MB)"
                     + (f"; server mode: client {results[100_000]['server']['client_rss_mb']:.0f} MB + "
                        f"`chroma run` {results[100_000]['server']['server_rss_mb']:.0f} MB."
                        if "server" in results[100_000] else "."))
    else:
        goals.append("- The 100k goals (p95 ≤ 50 ms embedded, memory ≤ 1 GB) need `--sizes` to include "
                     "100000.")

    extra = extrapolate(results, sizes)
    extrap = ""
    if extra:
        a, b = extra["from"]
        top = sorted(extra["steps"].items(), key=lambda kv: -kv[1]["at_1m"])[:4]
        extrap = (f"\n## 1M passages (extrapolated, not measured)\n\nFrom the growth between "
                  f"{_size_label(a)} and {_size_label(b)} (log-log slope per step, never below flat): "
                  "mean search ≈ "
                  f"**{extra['mean_ms_1m']:.0f} ms**, dominated by "
                  + ", ".join(f"{k} (≈{v['at_1m']:.0f} ms, slope {v['slope']:.2f})" for k, v in top)
                  + f". Embedded process memory grows ≈ {extra['mb_per_1k_passages']:.1f} MB per 1k "
                  "passages, "
                  f"so ≈ **{extra['client_rss_mb_1m'] / 1024:.1f} GB** at 1M (both HNSW indexes and the BM25 "
                  "postings live in the process). Building it takes "
                  + (f"≈ {builds[b]['seconds'] / builds[b]['added'] * 900_000 / 60:.0f} min more at the measured "
                     "write "
                     "rate. " if b in builds and b > a else "long. ")
                  + "Run `--sizes 1000,10000,100000,1000000` to measure it.\n")

    build_rows = [[_size_label(s), fmt(builds[s]["seconds"], 0),
                   fmt(builds[s]["added"] / builds[s]["seconds"], 0) if builds[s]["seconds"] else "—"]
                  for s in sizes if s in builds]
    md = f"""# Search latency and memory vs corpus size

Command: `{command_line()}` ({args.runs} alternating run(s) per size and store mode up to 10k,
{args.large_runs} above; {args.questions} real English XQuAD questions per run, k = {K}; medians over runs;
about {info.get('total_minutes', '?')} min in all).

{machine_note(info, load_end)}

**Data.** Passage *n* is one of the {args.base} XQuAD paragraphs (Arabic and English) made unique by a closing
sentence with the number *n*, five to an article, written through `Store.write_articles` and
`Store.add_accurate`. Stage-1 (USE, 512-d) and stage-2 (e5-small, 384-d) vectors are the base paragraph's real
vectors (encoded once, title as context) plus Gaussian noise of norm {args.noise} (cosine ≈
{1 / math.sqrt(1 + args.noise ** 2):.2f} to the base), re-normalised: real texts and near-real vectors up to
10k, the same scheme (synthetic vectors near the real ones) beyond. Every passage has both vectors and the
base paragraph's real latent terms (stored with the stage-2 vector), so the full fused path is measured.
Queries are real and embedded on every search; the embedders' caches are cleared before each.

**Process.** Each run is a fresh process that opens the existing index (`Index(settings)`), does one warm-up
search ("first search": loads e5 and the lexical index saved next to the store; the first run after the store
grew to a new size finds the saved index stale and brings it up to date, tokenising the new articles), then
the timed questions. Server mode runs a fresh `chroma run --path` on the same files for each run; its RSS is
reported separately. The steps of a search overlap (the e5 encoding and its HNSW query run on a second thread
while the USE and BM25 rankers run), so the step times below add up to more than the latency.

## Latency of `Index.search` (query embedding included)

{latency}

![search latency and memory](search_scale.png)

## Memory (RSS after the questions)

{memory}

## Cold start: a fresh process opening the index

{cold}

"Saved lexical index": *loaded* (up to date), *updated* (stale: the articles added since were tokenised and
the index saved again) or *built* (none). The RSS column reads: after `Index(settings)` / + both models'
weights / + the first vector queries (Chroma loads the HNSW indexes; in server mode that happens in the
server) / + the first search (the lexical index) / after the timed questions.

## Goals

{chr(10).join(goals)}

## Where the time goes at {_size_label(big)} (mean per question)

{steps}

Per step, embedded, by size:

{growth}
{extrap}
## Building the store (embedded, for reference)

{markdown_table(["passages", "seconds (both vector sets)", "passages/s"], build_rows)}
"""
    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    colours = {"embedded": "tab:blue", "server": "tab:orange"}
    for m in modes:
        xs = [s for s in sizes if m in results[s]]
        ax1.plot(xs, [results[s][m]["p50_ms"] for s in xs], "o--", color=colours[m], label=f"{m} p50")
        ax1.plot(xs, [results[s][m]["p95_ms"] for s in xs], "o-", color=colours[m], label=f"{m} p95")
    ax1.axhline(50, color="grey", lw=0.8, ls=":", label="goal: p95 ≤ 50 ms")
    ax1.set_xscale("log")
    ax1.set_xlabel("passages in the index (log scale)")
    ax1.set_ylabel("Index.search latency (ms)")
    ax1.set_title("Search latency")
    ax1.legend(fontsize=8)
    if "embedded" in modes:
        xs = [s for s in sizes if "embedded" in results[s]]
        ax2.plot(xs, [results[s]["embedded"]["client_rss_mb"] for s in xs], "o-", color=colours["embedded"],
                 label="embedded: search process")
    if has_server:
        xs = [s for s in sizes if "server" in results[s]]
        ax2.plot(xs, [results[s]["server"]["client_rss_mb"] for s in xs], "o--", color=colours["server"],
                 label="server mode: client process")
        ax2.plot(xs, [results[s]["server"]["server_rss_mb"] for s in xs], "s-", color=colours["server"],
                 label="server mode: chroma run process")
    ax2.axhline(1024, color="grey", lw=0.8, ls=":", label="goal: ≤ 1 GB at 100k")
    ax2.set_xscale("log")
    ax2.set_xlabel("passages in the index (log scale)")
    ax2.set_ylabel("resident memory, RSS (MB)")
    ax2.set_title("Memory after the questions")
    ax2.legend(fontsize=8)
    data = {"machine": info, "sizes": sizes, "modes": modes,
            "results": {str(k): v for k, v in results.items()},
            "builds": {str(k): v for k, v in builds.items()}, "extrapolation": extra,
            "questions": args.questions, "runs": args.runs, "noise": args.noise, "base": args.base}
    return md, fig, data


# -- main ----------------------------------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000",
                        help="comma-separated passage counts (default 1000,10000,100000; 1000000 takes about an "
                             "hour: see the module docstring)")
    parser.add_argument("--modes", default="embedded,server", help="embedded, server or both")
    parser.add_argument("--runs", type=int, default=3, help="fresh-process runs per size and mode")
    parser.add_argument("--large-runs", type=int, default=2,
                        help="runs per mode for sizes above 10k")
    parser.add_argument("--questions", type=int, default=120,
                        help="timed questions per run (≥100 for the report)")
    parser.add_argument("--noise", type=float, default=0.5,
                        help="norm of the Gaussian noise added to vectors")
    parser.add_argument("--base", type=int, default=240,
                        help="XQuAD paragraphs to use as bases (multiple of 5)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the .md/.png/.json go")
    parser.add_argument("--cache", type=Path, default=CACHE, help="where the base vectors are cached")
    parser.add_argument("--scratch", type=Path, help="keep the store here (default: a temp dir, removed)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: 1 run, 10 questions, 10 base paragraphs, no waiting for a quiet "
                             "machine")
    parser.add_argument("--no-wait", action="store_true", help="don't wait for a quiet machine")
    parser.add_argument("--no-terms", action="store_true",
                        help="search without the latent terms (NEWSDESK_LATENT_TERMS=0): one e5 pass per question")
    parser.add_argument("--reuse", action="store_true",
                        help="with --scratch: keep the store found there and fill it on from its size (e.g. "
                             "after a 1M fill was stopped)")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--build", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--range", help=argparse.SUPPRESS)
    parser.add_argument("--vectors", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.measure:
        questions = english_questions(args.questions + 1)
        print(json.dumps(measure(args.measure, questions[1:], questions[0])))
        return 0
    if args.build:
        start, stop = map(int, args.range.split(":"))
        print(json.dumps(build(args.build, start, stop, args.vectors, args.noise)))
        return 0

    if args.reuse and not args.scratch:
        parser.error("--reuse needs --scratch")
    if args.quick:
        args.runs, args.large_runs = 1, 1
        args.questions, args.base = min(args.questions, 10), min(args.base, 10)
    sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    sizes = [max(PER_ARTICLE, s // PER_ARTICLE * PER_ARTICLE) for s in sizes]
    modes = [m for m in ("embedded", "server") if m in args.modes.split(",")]
    if not modes:
        parser.error("--modes must name embedded and/or server")
    info = machine_info(wait_for_quiet(skip=args.quick or args.no_wait))
    vectors = base_vectors(args.base, args.cache)
    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="newsdesk-search-scale-"))
    home = scratch / "home"
    if home.exists() and not args.reuse:
        shutil.rmtree(home)
    results: dict[int, dict] = {}
    builds: dict[int, dict] = {}
    began = time.perf_counter()
    try:
        done = -1 if args.reuse else 0
        for size in sizes:
            log(f"filling the store to {size:,} passages")
            builds[size] = run_json(module_cmd("bench.search_scale", "--build", home, f"--range={done}:{size}",
                                               "--vectors", vectors, "--noise", args.noise),
                                    clean_env(home), timeout=None)
            done = size
            runs: dict[str, list[dict]] = {m: [] for m in modes}
            for n in range(args.runs if size <= 10_000 else args.large_runs):
                for mode in modes:  # alternate: a busy spell on the machine hits both modes
                    r = run_measure(home, mode, args.questions, terms=not args.no_terms)
                    runs[mode].append(r)
                    log(f"  {size:,} {mode} run {n + 1}: p50 {percentile(r['latencies_ms'], 50):.1f} ms, "
                        f"p95 {percentile(r['latencies_ms'], 95):.1f} ms, "
                        f"first search {r['first_search_s']:.1f} s,"
                        f" RSS {r['rss_end_mb']:.0f} MB"
                        + (f", server {r['server_rss_end_mb']:.0f} MB" if "server_rss_end_mb" in r else ""))
            results[size] = {m: summarise(runs[m]) for m in modes}
            for mode in modes:
                results[size][mode]["raw"] = runs[mode]
    finally:
        if not args.scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    info["total_minutes"] = round((time.perf_counter() - began) / 60, 1)
    md, fig, data = report(results, sizes, modes, builds, args, info, load_1min())
    for r in results.values():  # keep the JSON readable: per-question latencies only in the summary form
        for mode in modes:
            for raw in r[mode].pop("raw"):
                raw.pop("latencies_ms", None)
    for path in write_report(args.out, "search_scale", md, data, fig):
        log(f"wrote {path}")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
