"""Before and after in one run: `newsdesk index --fast` of the same corpus at several git revisions, alternating.

    python -m bench.ab_index ef114a3 HEAD               # 1k paragraphs, 3 alternating runs, + USE alone
    python -m bench.ab_index HEAD --size 20 --runs 1    # smoke test

Each revision is checked out into a temporary git worktree and its CLI is run from there, in a fresh home per
run, on the same corpus (``bench.common.write_corpus``); the runs alternate between revisions (and the
USE-alone process of ``python -m bench.index_scale --encoder-only``), so that a slow spell of the machine hits
every side. Prints a markdown table: median wall and CPU seconds of the whole process per revision, and USE
alone ÷ that (the index_scale ratio).

How a revision's code is imported (this is the measuring harness's business, not the project's): a revision
from before the package rename (fff654e) has top-level ``bot``/``index`` packages and runs as ``python -m
bot.cli`` from its worktree; a later one maps its folders to ``newsdesk.bot`` … (setuptools ``package-dir``),
so a throwaway folder ``newsdesk/{bot,index,prompts}`` of symlinks into the worktree is built and the CLI runs
as ``python -m newsdesk.bot.cli`` from the folder above it. Either way that folder is the working directory
and ``PYTHONPATH`` of the run, so it comes before the installed (editable) newsdesk, and before each revision
is timed a probe checks that its CLI module really is imported from its worktree.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

from bench.common import ROOT, clean_env, log, markdown_table, median, module_cmd, timed_cpu_run, write_corpus


@dataclass(frozen=True)
class Revision:
    """A revision checked out for timing: its worktree, the folder to import it from, its CLI module."""

    tree: Path
    path: Path  # working directory and PYTHONPATH of its runs
    cli: str  # e.g. newsdesk.bot.cli

    def env(self, home: Path | None = None) -> dict:
        return clean_env(home, PYTHONPATH=str(self.path))


def worktree(rev: str, into: Path) -> Path:
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "--force", str(into), rev],
                   check=True, capture_output=True)
    return into


def package_dirs(tree: Path) -> dict[str, str]:
    """The ``newsdesk.*`` packages of the revision at ``tree`` and their folders (setuptools ``package-dir``
    in its pyproject.toml); empty for a revision from before the package rename."""
    pyproject = tree / "pyproject.toml"
    if not pyproject.is_file():
        return {}
    config = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    mapping = config.get("tool", {}).get("setuptools", {}).get("package-dir", {})
    return {name: folder for name, folder in mapping.items() if name.startswith("newsdesk.")}


def checkout(rev: str, into: Path) -> Revision:
    """Check ``rev`` out into ``into`` and work out how to import it (see the module docstring)."""
    tree = worktree(rev, into)
    mapping = package_dirs(tree)
    if not mapping:
        return verified(rev, Revision(tree, tree, "bot.cli"))
    links = into.with_name(into.name + "-imports")
    for name, folder in mapping.items():
        link = links.joinpath(*name.split("."))
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(tree / folder, target_is_directory=True)
    return verified(rev, Revision(tree, links, "newsdesk.bot.cli"))


def verified(rev: str, revision: Revision) -> Revision:
    """The revision, once a probe run the way it will be timed has imported its CLI from its worktree."""
    probe = [sys.executable, "-c", f"import {revision.cli} as m; print(m.__file__)"]
    proc = subprocess.run(probe, capture_output=True, text=True, cwd=revision.path,
                          env=revision.env())
    imported = Path(proc.stdout.strip()).resolve() if proc.returncode == 0 else None
    if imported is None or not imported.is_relative_to(revision.tree.resolve()):
        raise SystemExit(f"{rev}: {revision.cli} was not imported from its worktree "
                         f"({imported or proc.stderr.strip()[-500:]})")
    log(f"{rev}: {revision.cli} from {imported}")
    return revision


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
        trees: dict[str, Revision] = {}
        results: dict[str, list[tuple[float, float]]] = {}
        try:
            for n, rev in enumerate(args.revisions):
                trees[rev] = checkout(rev, scratch / f"tree-{n}")
                results[rev] = []
            results["USE alone"] = []
            encoder = module_cmd("bench.index_scale", "--encoder-only", corpus, "--stage", "use")
            for n in range(args.runs):
                for rev, revision in trees.items():
                    command = module_cmd(revision.cli, "index", corpus, "--fast", "--json")
                    env = revision.env(scratch / f"home-{rev}-{n}")
                    results[rev].append(timed_cpu_run(command, env, cwd=revision.path)[:2])
                results["USE alone"].append(timed_cpu_run(encoder, clean_env())[:2])
                log(f"run {n + 1}: " + ", ".join(f"{k} {v[-1][0]:.1f} s" for k, v in results.items()))
        finally:
            for n in range(len(args.revisions)):  # those checked out, and one that failed half-way
                if (scratch / f"tree-{n}").exists():
                    subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                                    str(scratch / f"tree-{n}")], capture_output=True)
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
