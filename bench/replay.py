"""Replay: ask the dev questions again on homes ``bench.languages --homes DIR`` kept, with the questions'
encodings cached on disk, to try a ranking change in ~40 s a home instead of rebuilding every index.

    python -m bench.replay /tmp/lang-homes                          # every complete home kept there
    python -m bench.replay /tmp/lang-homes --only single-vi,mixed   # some of them
    python -m bench.replay /tmp/lang-homes --set search.LANGUAGE_OFFSET=0.4 --set search.WEIGHTS.terms=0.5

What it measures is ``bench.languages``' both-stage figures (hit@1, hit@5 per run, and per language on the
mixed index), on the passages those homes hold: nothing is indexed again (only the saved lexical index is
rewritten when its format changed). The three query-time
encodings (the USE and e5 question vectors, the question's e5 latent terms) are cached by (model, text) in
``bench/out/cache/replay-queries.pkl``: a question is encoded once, and every later replay reads it. Passage
encodings are not involved (they are stored in the homes). Reproduces ``bench.languages`` within a question
(English -> Greek 0.8513 against 0.850, session 12).

``--set MODULE.NAME=VALUE`` (VALUE as JSON; ``MODULE.NAME.KEY=VALUE`` for a dict's entry) sets a constant of
``newsdesk.index.MODULE`` for the replay: the way to try a weight or a threshold without editing the code.
Changes to the code itself are replayed as they are (the homes hold stored data, not code).
"""

from __future__ import annotations

import argparse
import json
import pickle
import threading
import time
from pathlib import Path

import numpy as np

from bench.common import CACHE, log

CACHE_FILE = CACHE / "replay-queries.pkl"


class QueryCache:
    """The query-time encodings, by (model, kind, text), kept in one pickle file (ours, written here)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict = {}
        if path.exists():
            with path.open("rb") as f:
                self.data = pickle.load(f)
        self.fresh = 0
        self.lock = threading.Lock()

    def wrap(self, cls, method: str, kind: str, model: str) -> None:
        original = getattr(cls, method)
        cache = self

        def cached(self_, texts, *args, **kwargs):
            if kwargs.get("bulk") or (args and args[0] is True):
                return original(self_, texts, *args, **kwargs)
            texts = list(texts)
            with cache.lock:
                missing = [t for t in texts if (model, kind, t) not in cache.data]
            if missing:
                values = original(self_, missing, *args, **kwargs)
                with cache.lock:
                    for text, value in zip(missing, values):
                        cache.data[(model, kind, text)] = value
                    cache.fresh += len(missing)
            with cache.lock:
                values = [cache.data[(model, kind, t)] for t in texts]
            if kind == "terms":
                return values
            return np.vstack(values) if values else original(self_, texts, *args, **kwargs)

        setattr(cls, method, cached)

    def save(self) -> None:
        if not self.fresh:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("wb") as f:
            pickle.dump(self.data, f)
        tmp.replace(self.path)


def apply_setting(assignment: str) -> None:
    """``MODULE.NAME=VALUE`` or ``MODULE.NAME.KEY=VALUE``: set a constant of ``newsdesk.index.MODULE``."""
    import importlib

    target, _, raw = assignment.partition("=")
    parts = target.split(".")
    if not raw or len(parts) not in (2, 3):
        raise SystemExit(f"--set {assignment!r}: expected MODULE.NAME=VALUE or MODULE.NAME.KEY=VALUE")
    module = importlib.import_module(f"newsdesk.index.{parts[0]}")
    if not hasattr(module, parts[1]):
        raise SystemExit(f"--set: newsdesk.index.{parts[0]} has no {parts[1]}")
    value = json.loads(raw)
    if isinstance(value, list) and isinstance(getattr(module, parts[1]), frozenset):
        value = frozenset(value)
    if len(parts) == 2:
        setattr(module, parts[1], value)
    else:
        getattr(module, parts[1])[parts[2]] = value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("homes", type=Path, help="the folder bench.languages --homes kept")
    parser.add_argument("--only", default="", help="comma-separated home names (single-XX, mixed, xquad-ar)")
    parser.add_argument("--set", action="append", default=[], dest="settings", metavar="MODULE.NAME=VALUE")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)

    from bench import languages as L
    from newsdesk.index import embedding as E

    for assignment in args.settings:
        apply_setting(assignment)
    cache = QueryCache(CACHE_FILE)
    cache.wrap(E.UseEmbedder, "_queries", "query", "use")
    cache.wrap(E.E5Embedder, "_queries", "query", "e5")
    cache.wrap(E.E5Embedder, "terms", "terms", "e5")

    only = {name for name in args.only.split(",") if name}
    results: dict = {}
    started = time.perf_counter()
    try:
        for name, _articles, runs in L.settings_to_run(list(L.LANGS)):
            home = args.homes / name
            if (only and name not in only) or not L._complete(home).exists():
                continue
            results.update(L._measure(home, "both", runs))
    finally:
        cache.save()
    for name, report in results.items():
        line = (f"{name:12} hit@1 {report['hit@1']:.4f} hit@5 {report['hit@5']:.4f} "
                f"article@1 {report['article_recall@1']:.4f}")
        per = report.get("languages") or {}
        if len(per) > 1:
            line += "  " + " ".join(f"{lang} {r['hit@1']:.3f}" for lang, r in sorted(per.items()))
        print(line)
    log(f"{len(results)} runs in {time.perf_counter() - started:.0f} s ({cache.fresh} questions encoded)")
    if args.json:
        args.json.write_text(json.dumps({"settings": args.settings, "runs": results}, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
