"""Near-identical copies in Chroma's HNSW index: how many passages their own stored vector finds.

    python -m bench.dedup_vectors [--stories 6] [--copies 4] [--n 5]

A corpus of ``--stories`` XQuAD English articles, each republished ``--copies`` times with small edits (an
outlet's dateline on the first paragraph, its own last sentence), indexed with stage 1 (USE, ``--fast``) into
a scratch home. For every stored passage its own vector is the query (``n`` nearest): "own passage" counts
the passages among the results, "own story" those whose passage, or a copy of it in another outlet's article
(``index.dedup``'s group), is among them. Then the same with one copy per story (what skipping duplicates
would store). Prints one line per setting.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from newsdesk.index.service import Index
from newsdesk.index.store import split_passage_id

from tests.conftest import make_settings
from tests.support import XQUAD


def write_corpus(folder: Path, stories: int, copies: int) -> None:
    folder.mkdir(parents=True)
    for path in sorted((XQUAD / "articles-en").glob("*.txt"))[:stories]:
        title, _, body = path.read_text(encoding="utf-8").partition("\n")
        paragraphs = [p for p in body.split("\n\n") if p.strip()]
        for c in range(copies):
            outlet = f"Outlet {c}"
            first = f"LONDON ({outlet}) - {paragraphs[0]}"
            text = "\n\n".join([first, *paragraphs[1:], f"{outlet} will update this story as news comes in."])
            (folder / f"{path.stem}-{c}.txt").write_text(
                f"---\nsource: {outlet}\npublished: 2020-10-0{1 + c % 9}\n---\n{title}\n\n{text}\n", encoding="utf-8")


def measure(docs: Path, n: int) -> tuple[int, int, int]:
    """(passages, found by their own vector, found as their own story) for an index of ``docs``."""
    home = Path(tempfile.mkdtemp(prefix="dedup-vectors-"))
    index = Index(make_settings(home))
    try:
        index.index([str(docs)], accurate=False, show_progress=False)
        groups = {row["id"]: row["group"] for row in index.list_articles()}
        passages = list(index.store.iter_passages(with_vectors=True))
        index_of = {p.chunk_id: int(p.chunk_id.rpartition("#")[2].partition("@")[0]) for p, _ in passages}
        own = story = 0
        for passage, vector in passages:
            found = [cid for cid, _ in index.store.query_passages(vector, n)]
            own += passage.chunk_id in found
            key = (groups[passage.article_id], index_of[passage.chunk_id])
            story += any((groups[split_passage_id(cid)[0]], index_of.get(cid)) == key for cid in found)
        return len(passages), own, story
    finally:
        index.close()
        shutil.rmtree(home, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stories", type=int, default=6)
    parser.add_argument("--copies", type=int, default=4)
    parser.add_argument("--n", type=int, default=5, help="results per query")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="dedup-corpus-"))
    try:
        write_corpus(scratch / "all", args.stories, args.copies)
        (scratch / "one").mkdir()
        for path in sorted((scratch / "all").glob("*-0.txt")):
            shutil.copy(path, scratch / "one" / path.name)
        for name, label in (("all", f"every copy stored ({args.copies} per story)"), ("one", "one copy per story")):
            total, own, story = measure(scratch / name, args.n)
            print(f"{label}: {total} passages; own vector finds its passage {own}/{total} "
                  f"({total - own} not found), its story {story}/{total} (n={args.n})")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
