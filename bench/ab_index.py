"""Before and after in one run: `newsdesk index --fast` of the same corpus at several git revisions, alternating.

    python bench/ab_index.py ef114a3 HEAD               # 1k paragraphs, 3 alternating runs, + USE alone
    python bench/ab_index.py HEAD --size 20 --runs 1    # smoke test

Each revision is checked out into a temporary git worktree and run from there (``python -m bot.cli`` with that
worktree first on the path), in a fresh home per run, on the same corpus (``bench.common.write_corpus``); the
runs alternate between revisions (and the USE-alone process of ``index_scale.py --encoder-only``), so that a
slow spell of the machine hits every side. Prints a markdown table: median wall and CPU seconds of the whole
process per revision, and USE alone ÷ that (the index_scale ratio).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ROOT, clean_env, log, markdown_table, median, timed_cpu_run, write_corpus  # noqa: E402


def worktree(rev: str, into: Path) -> Path:
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "--force", str(into), rev],
                   check=True, capture_output=True)
    return into


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("revisions", nargs="+", help="git revisions to compare (e.g. ef114a3 HEAD)")
    parser.add_argument("--size", type=int, default=1000, help="paragraphs in the corpus")
    parser.add_argument("--runs", type=int, default=3, help="alternating runs per side")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="newsdesk-ab-") as tmp:
        scratch = Path(tmp)
        corpus = scratch / "corpus"
        write_corpus(corpus, args.size)
        trees = {rev: worktree(rev, scratch / f"tree-{n}") for n, rev in enumerate(args.revisions)}
        results: dict[str, list[tuple[float, float]]] = {rev: [] for rev in trees}
        results["USE alone"] = []
        try:
            for n in range(args.runs):
                for rev, tree in trees.items():
                    env = clean_env(scratch / f"home-{rev}-{n}")
                    env["PYTHONPATH"] = str(tree)
                    results[rev].append(timed_cpu_run([sys.executable, "-m", "newsdesk.bot.cli", "index", str(corpus),
                                                       "--fast", "--json"], env)[:2])
                encoder = [sys.executable, str(Path(__file__).with_name("index_scale.py")), "--encoder-only",
                           str(corpus), "--stage", "use"]
                results["USE alone"].append(timed_cpu_run(encoder, clean_env())[:2])
                log(f"run {n + 1}: " + ", ".join(f"{k} {v[-1][0]:.1f} s" for k, v in results.items()))
        finally:
            for tree in trees.values():
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                               capture_output=True)
    alone = median(wall for wall, _ in results["USE alone"])
    rows = []
    for side, runs in results.items():
        wall = median(w for w, _ in runs)
        rows.append([side, f"{wall:.2f} ({', '.join(f'{w:.1f}' for w, _ in runs)})",
                     f"{median(c for _, c in runs):.1f}", f"{alone / wall:.2f}"])
    print(f"`newsdesk index --fast`, {args.size:,} paragraphs, {args.runs} alternating run(s):\n")
    print(markdown_table(["revision", "wall, s (median; runs)", "CPU, s", "USE alone ÷ this"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
