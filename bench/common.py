"""Shared helpers for the benchmarks in bench/: data, machine load, subprocesses, a Chroma server, reports.

Every benchmark runs as a module from the repository root (``python -m bench.NAME``), so that ``bench`` and
``tests`` import from there and newsdesk from the installed package; the scripts start their own helper
processes the same way (``module_cmd``), with the repository root as their working directory.

Data comes from ``../shared/eval/xquad-dev`` (relative to the repository root), read in place, never copied:

- ``base_paragraphs()``: the 240 XQuAD paragraphs (24 articles x 5 paragraphs, Arabic and English), in article
  order, each with its article's title;
- ``unique_text(base, n)``: a paragraph made unique by appending a sentence with a number in the paragraph's
  own language (so it keeps its script, and nothing is skipped as a duplicate);
- ``english_questions(n)``: real English questions (``question_en``), deterministic order.

Reports: each benchmark writes ``<name>.md`` (tables), ``<name>.png`` (chart) and ``<name>.json`` (raw
numbers) into ``--out`` (default ``docs/benchmarks/``).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.support import EXAMPLE_DIR as EXAMPLES  # noqa: F401 - re-exported for the benchmarks
from tests.support import ROOT, SHARED, XQUAD, clean_env, free_port, stop  # noqa: F401
from tests.support import ChromaServer as _ChromaServer

QUESTIONS = XQUAD / "questions.jsonl"
DEFAULT_OUT = ROOT / "docs" / "benchmarks"
CACHE = ROOT / "bench" / "out" / "cache"  # git-ignored
QUIET_LOAD = 2.5


# -- data ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BaseParagraph:
    article: str  # XQuAD article id, e.g. xquad-00-super-bowl-50
    lang: str  # "ar" or "en"
    title: str
    index: int  # paragraph number within the article (0-4)
    text: str


def read_article(path: Path) -> tuple[str, list[str]]:
    """(title, paragraphs) of an XQuAD article file: title on the first line, paragraphs after blank lines."""
    text = path.read_text(encoding="utf-8-sig").replace("\r\n", "\n").strip()
    blocks = [b.strip() for b in text.split("\n\n") if b.strip()]
    return blocks[0], blocks[1:]


def base_paragraphs(limit: int | None = None) -> list[BaseParagraph]:
    """The XQuAD paragraphs of both languages, article by article (Arabic and English articles alternate, so
    any prefix holds both languages)."""
    out: list[BaseParagraph] = []
    ar = sorted((XQUAD / "articles-ar").glob("*.txt"))
    en = sorted((XQUAD / "articles-en").glob("*.txt"))
    if not ar or not en:
        raise SystemExit(f"the XQuAD articles are missing: expected them under {XQUAD}")
    for a, e in zip(ar, en, strict=False):
        for lang, path in (("ar", a), ("en", e)):
            title, paras = read_article(path)
            out.extend(BaseParagraph(path.stem, lang, title, i, p) for i, p in enumerate(paras))
    return out[:limit] if limit else out


def unique_text(base: BaseParagraph, n: int) -> str:
    """The base paragraph with a distinct closing sentence carrying ``n``."""
    if base.lang == "ar":
        return f"{base.text} وهذه هي الفقرة رقم {n} في أرشيف الاختبار."
    return f"{base.text} This is paragraph number {n} of the test archive."


def english_questions(n: int, seed: int = 6) -> list[str]:
    """``n`` distinct real English questions from XQuAD (shuffled with a fixed seed, so every size and every
    store mode gets the same ones)."""
    seen: dict[str, None] = {}
    for line in QUESTIONS.read_text(encoding="utf-8").splitlines():
        if line.strip():
            seen.setdefault(json.loads(line)["question_en"].strip(), None)
    questions = list(seen)
    random.Random(seed).shuffle(questions)
    if n > len(questions):
        raise SystemExit(f"only {len(questions)} distinct questions in {QUESTIONS}")
    return questions[:n]


def write_corpus(folder: Path, n_paragraphs: int, per_article: int = 5, start: int = 0) -> int:
    """Write ``n_paragraphs`` unique paragraphs as article files (``per_article`` paragraphs each, title line
    first, like the XQuAD files) into ``folder``; returns the number of articles. Consecutive base paragraphs
    of one XQuAD article stay together, so each file reads as one article."""
    bases = base_paragraphs()
    folder.mkdir(parents=True, exist_ok=True)
    articles = 0
    i = 0
    while i < n_paragraphs:
        group = []
        while len(group) < per_article and i < n_paragraphs:
            n = start + i
            base = bases[n % len(bases)]
            if group and base.article != group[0][0].article:
                break
            group.append((base, n))
            i += 1
        first = group[0][0]
        copy = (start + i - 1) // len(bases)
        title = f"{first.title} ({copy + 1})"
        body = "\n\n".join(unique_text(b, n) for b, n in group)
        name = f"{articles + start // per_article:06d}-{first.article}-{first.lang}.txt"
        (folder / name).write_text(f"{title}\n\n{body}\n", encoding="utf-8")
        articles += 1
    return articles


# -- statistics ----------------------------------------------------------------------------------------------

def percentile(values: Sequence[float], p: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return float("nan")
    xs = sorted(values)
    pos = (len(xs) - 1) * p / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def median(values: Iterable[float]) -> float:
    values = list(values)
    return statistics.median(values) if values else float("nan")


# -- the machine ---------------------------------------------------------------------------------------------

def load_1min() -> float:
    return os.getloadavg()[0]


def load_average() -> str:
    """The 1- and 5-minute load averages, for a report ("unknown" where the system does not say)."""
    try:
        one, five, _ = os.getloadavg()
    except OSError:
        return "unknown"
    return f"{one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} CPUs"


def wait_for_quiet(threshold: float = QUIET_LOAD, poll: float = 60.0, max_wait: float = 1200.0,
                   skip: bool = False) -> dict:
    """Wait (polling every ``poll`` s, at most ``max_wait`` s) until the 1-minute load average is below
    ``threshold``. Returns what happened, for the report: a benchmark that could not wait runs anyway."""
    started = time.monotonic()
    load = load_1min()
    while not skip and load >= threshold and time.monotonic() - started < max_wait:
        log(f"load average {load:.2f} ≥ {threshold}: waiting for a quieter machine "
            f"({(time.monotonic() - started) / 60:.0f} of {max_wait / 60:.0f} min)")
        time.sleep(poll)
        load = load_1min()
    return {"load_at_start": round(load, 2), "waited_s": round(time.monotonic() - started),
            "quiet": load < threshold, "threshold": threshold, "skipped_wait": skip}


def machine_info(quiet: dict | None = None) -> dict:
    info = {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
            "date": time.strftime("%Y-%m-%d %H:%M")}
    try:
        import psutil

        info["memory_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    if quiet is not None:
        info.update(quiet)
    return info


def machine_note(info: dict, load_end: float | None = None) -> str:
    """One paragraph for the report saying what the machine was doing."""
    parts = [f"{info['cpus']} cores, {info.get('memory_gb', '?')} GB, Python {info['python']}, "
             f"{info['date']}."]
    if "load_at_start" in info:
        if info.get("quiet"):
            parts.append(f"1-minute load average at the start: {info['load_at_start']} "
                         f"(below {info['threshold']}: a quiet machine).")
        else:
            waited = ("--no-wait: did not wait for it to drop" if info.get("skipped_wait") else
                      f"waited {info['waited_s'] // 60} min for it to drop")
            parts.append(f"**The machine was loaded**: 1-minute load average {info['load_at_start']} at the "
                         f"start (other work was running; {waited} below {info['threshold']}). Absolute "
                         "times are pessimistic; ratios of alternating runs are less affected.")
    if load_end is not None:
        parts.append(f"Load average at the end: {load_end:.2f}.")
    return " ".join(parts)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- processes -----------------------------------------------------------------------------------------------

def run_json(cmd: Sequence[str], env: dict, timeout: float | None = 3600, cwd: Path | None = None) -> dict:
    """Run a command that prints one JSON object on its last stdout line; fail loudly otherwise."""
    proc = subprocess.run(list(cmd), capture_output=True, text=True, env=env, timeout=timeout,
                          cwd=cwd or ROOT)
    if proc.returncode not in (0,):
        what = " ".join(map(str, cmd[:4]))
        raise SystemExit(f"{what}… failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    if not lines:
        raise SystemExit(f"{' '.join(map(str, cmd[:4]))}… printed nothing:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


def module_cmd(module: str, *args: str) -> list[str]:
    """The command that runs ``module`` (e.g. ``bench.index_scale``) with this interpreter; run it from the
    repository root (``run_json`` does)."""
    return [sys.executable, "-m", module, *map(str, args)]


def timed_run(cmd: Sequence[str], env: dict, timeout: float = 3600, cwd: Path | None = None) -> tuple[float, dict]:
    """Wall seconds of a whole process (interpreter start to exit) and its JSON output."""
    started = time.perf_counter()
    out = run_json(cmd, env, timeout, cwd)
    return time.perf_counter() - started, out


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed_cpu_run(cmd: Sequence[str], env: dict, cwd: Path | None = None) -> tuple[float, float, dict]:
    """Wall and CPU seconds of a whole process, and its JSON output. CPU time is what the work cost whatever
    else the machine was doing; wall time is what a user waits."""
    cpu = _children_cpu()
    wall, out = timed_run(cmd, env, cwd=cwd)
    return wall, _children_cpu() - cpu, out


def rss_mb(pid: int, children: bool = True) -> float:
    """Resident memory of a process (and its children), in MB."""
    import psutil

    proc = psutil.Process(pid)
    procs = [proc] + (proc.children(recursive=True) if children else [])
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total / 2**20


class ChromaServer(_ChromaServer):
    """``tests.support.ChromaServer`` that also reports its memory; a start-up failure ends the benchmark."""

    def __enter__(self) -> ChromaServer:
        try:
            return super().__enter__()
        except RuntimeError as exc:
            raise SystemExit(str(exc)) from exc

    def rss_mb(self) -> float:
        return rss_mb(self.pid)


# -- reports -------------------------------------------------------------------------------------------------

def fmt(value, digits: int = 1) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        if math.isnan(value):
            return "—"
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(str(c) for c in row) + " |")
    return "\n".join(lines)


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_report(out_dir: Path, name: str, markdown: str, data: dict, figure) -> list[Path]:
    """Write ``<name>.md``, ``<name>.json`` and ``<name>.png`` (from a matplotlib figure) into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    md, js, png = out_dir / f"{name}.md", out_dir / f"{name}.json", out_dir / f"{name}.png"
    md.write_text(markdown.rstrip() + "\n", encoding="utf-8")
    js.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    figure.tight_layout()
    figure.savefig(png, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(figure)
    return [md, png, js]


def command_line() -> str:
    """How this benchmark was invoked, for the report (``python -m bench.NAME …``, as it is run from the
    repository root)."""
    return " ".join(["python", "-m", f"bench.{Path(sys.argv[0]).stem}", *sys.argv[1:]])
