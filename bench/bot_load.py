"""The Telegram bot under load: 1, 10 and 50 chats asking at once, message to final reply.

    python -m bench.bot_load                      # levels 1,10,50; 3 alternating runs
    python -m bench.bot_load --chats 1,2 --quick  # smoke test
    python -m bench.bot_load --fast               # stage 1 only: the same without e5 on the answer path
    python -m bench.bot_load --both               # both bots side by side, taking turns: both reports

The real bot (``newsdesk bot`` in its own process, offline mode: no OpenAI key) runs against the fake Telegram
Bot API server of ``tests/fake_telegram.py`` on 127.0.0.1 (long polling over real HTTP), on an index of
``examples/articles`` (both stages, built first with ``newsdesk index``; stage 1 only with ``--fast``, which
shows what encoding each question with e5 costs under load: that bot runs with ``NEWSDESK_ACCURATE=off``, else
it would fill in the stage-2 vectors itself within seconds of starting). The questions are the project's seed
questions about that article (``../shared/eval/seed-questions.jsonl``, answerable and not), in turn.

Each level is one burst: N private chats (each a new chat and user, so neither the per-user rate limit nor the
follow-up history interferes) send one question each at the same moment. Latency is from the moment the fake
server queues a question to the moment it receives the last ``sendMessage`` of the answer in that chat. The
1-chat level asks ``--single`` questions one after the other. Levels alternate within each run (1, 10, 50,
then again), ``--runs`` times; p50/p95 are medians over the runs.

Checked on every question: exactly one answer replies to it (``reply_parameters.message_id``), none is an
apology, nothing is sent to a chat that did not ask, and no Bot API method unknown to the fake was called.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from dataclasses import dataclass, field
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import (
    DEFAULT_OUT,
    EXAMPLES,
    SHARED,
    clean_env,
    stop,
    command_line,
    fmt,
    load_1min,
    log,
    machine_info,
    machine_note,
    markdown_table,
    median,
    percentile,
    pyplot,
    rss_mb,
    run_json,
    wait_for_quiet,
    write_report,
)

SEED = SHARED / "eval" / "seed-questions.jsonl"
STATS = [sys.executable, "-m", "newsdesk.bot.cli", "stats", "--json"]


@dataclass(frozen=True)
class Variant:
    """One bot setup, named after its report."""

    stages: str  # for charts and logs
    description: str  # for the report
    index_args: tuple[str, ...] = ()  # extra `newsdesk index` arguments
    settings: dict = field(default_factory=dict)  # NEWSDESK_ settings of the index and the bot


VARIANTS = {
    "bot_load": Variant("both stages", "both stages"),
    # NEWSDESK_ACCURATE=off for the bot too: else it fills in the stage-2 vectors itself within seconds
    "bot_load_fast": Variant(
        "stage 1 only (NEWSDESK_ACCURATE=off)",
        "stage 1 only (`--fast`: indexed with `--fast` and the bot run with `NEWSDESK_ACCURATE=off`: no e5 "
        "question encoding, the sentence re-rank instead)",
        ("--fast",), {"NEWSDESK_ACCURATE": "off"}),
}
SETTLE = 1.0  # seconds without a new sendMessage before a burst counts as fully answered


def seed_questions() -> list[str]:
    return [json.loads(line)["question"] for line in SEED.read_text(encoding="utf-8").splitlines()
            if line.strip()]


class Load:
    def __init__(self, tg, questions: list[str], timeout: float) -> None:
        self.tg, self.questions, self.timeout = tg, questions, timeout
        self.next_chat = 1000
        self.asked = 0
        self.asked_chats: set[int] = set()
        self.problems: list[str] = []

    def _question(self) -> str:
        """The seed questions in turn, each asked text unique ("Question 17: …"): the engine remembers the
        vectors of recent questions, and a benchmark of repeated texts would measure that cache."""
        q = self.questions[self.asked % len(self.questions)]
        self.asked += 1
        return f"Question {self.asked}: {q}"

    def burst(self, n: int) -> list[float]:
        """``n`` new chats ask at once; returns the seconds from each question to its final reply."""
        tg = self.tg
        sent = []
        for _ in range(n):
            chat = self.next_chat
            self.next_chat += 1
            self.asked_chats.add(chat)
            msg = tg.message(chat, self._question())
            sent.append((chat, msg["message_id"], time.monotonic()))
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if all(tg.messages(chat) for chat, _, _ in sent):
                break
            time.sleep(0.02)
        # settle: the answer may be several messages; wait until nothing new arrives for a moment
        count, quiet_since = -1, time.monotonic()
        while time.monotonic() < deadline:
            now = len(tg.calls_of("sendMessage"))
            if now != count:
                count, quiet_since = now, time.monotonic()
            elif time.monotonic() - quiet_since >= SETTLE:
                break
            time.sleep(0.05)
        out = []
        for chat, message_id, at in sent:
            calls = tg.calls_of("sendMessage", chat)
            replies = [c for c in calls
                       if (c.params.get("reply_parameters") or {}).get("message_id") == message_id]
            if not calls:
                self.problems.append(f"chat {chat}: no answer (lost) within {self.timeout:.0f} s")
                continue
            if len(replies) != 1:
                self.problems.append(f"chat {chat}: {len(replies)} answers reply to the question "
                                     "(expected 1)")
            if any("Sorry" in c.params.get("text", "") for c in calls):
                self.problems.append(f"chat {chat}: an apology instead of an answer")
            out.append(calls[-1].at - at)
        return out

    def check_strays(self) -> None:
        strays = {str(c.params.get("chat_id")) for c in self.tg.calls_of("sendMessage")} - {
            str(c) for c in self.asked_chats}
        if strays:
            self.problems.append(f"messages sent to chats that did not ask: {sorted(strays)[:5]}")
        if self.tg.unknown:
            self.problems.append(f"Bot API calls the fake does not know: {self.tg.unknown[:5]}")


class Bot:
    """One `newsdesk bot` process on the index in ``home``, against its own fake Bot API server."""

    def __init__(self, name: str, home: Path, scratch: Path, args) -> None:
        self.name, self.home, self.scratch, self.args = name, home, scratch, args
        self.samples: dict[int, list[list[float]]] = {n: [] for n in args.levels}

    def __enter__(self) -> Bot:
        from tests.fake_telegram import FakeTelegram

        self.tg = FakeTelegram().start()
        env = clean_env(self.home, TELEGRAM_BOT_TOKEN=self.tg.token, TELEGRAM_API_BASE_URL=self.tg.base_url,
                        NEWSDESK_LOG_LEVEL="WARNING", **VARIANTS[self.name].settings)
        # a file, not a pipe: a pipe nobody reads would block a chatty bot
        self.bot_log = self.scratch / f"bot-{self.name}.log"
        self.proc = subprocess.Popen([sys.executable, "-m", "newsdesk.bot.cli", "bot"], env=env, cwd=self.scratch,
                                     stdout=subprocess.DEVNULL, stderr=self.bot_log.open("w"), text=True)
        self.load = Load(self.tg, seed_questions(), self.args.timeout)
        try:
            self.tg.wait(lambda: self.tg.calls_of("setMyCommands") or self.proc.poll() is not None, timeout=120)
            if self.proc.poll() is not None:
                raise SystemExit(f"the bot exited ({self.proc.returncode}): {self.bot_log.read_text()[-2000:]}")
            started = time.monotonic()
            self.load.burst(1)  # warm-up: the models are loaded (not counted)
            log(f"{self.name} bot up; warm-up answer in {time.monotonic() - started:.1f} s")
            self.cpu0 = _cpu(self.proc.pid)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        stop(self.proc, timeout=20)
        self.tg.stop()

    def level(self, n: int, run_no: int) -> None:
        args = self.args
        if n == 1:
            got = [t for _ in range(args.single) for t in self.load.burst(1)]
        else:
            got = [t for _ in range(args.bursts if n <= 10 else 1) for t in self.load.burst(n)]
        self.samples[n].append(got)
        log(f"  {self.name}, run {run_no + 1}, {n} chat(s): p50 {percentile(got, 50):.2f} s, "
            f"p95 {percentile(got, 95):.2f} s ({len(got)} answers)")

    def result(self) -> dict:
        rss, cpu = rss_mb(self.proc.pid), _cpu(self.proc.pid) - self.cpu0
        self.load.check_strays()
        # the bot runs at WARNING: anything it logged is a problem (an update it could not handle, an error)
        logged = [line for line in self.bot_log.read_text().splitlines() if " WARNING " in line or " ERROR " in line]
        self.load.problems[:0] = [f"bot log: {line}" for line in logged[:20]]
        return {"samples": self.samples, "problems": self.load.problems, "asked": self.load.asked,
                "bot_rss_mb": rss, "bot_cpu_s": cpu}


def run(args, homes: dict[str, Path], scratch: Path) -> dict[str, dict]:
    """Every bot in ``homes`` up at once; levels alternate (1, 10, 50, …) and, within a level, the bots take
    turns, so that a slow spell of the machine hits each of them."""
    with contextlib.ExitStack() as stack:
        bots = [stack.enter_context(Bot(name, home, scratch, args)) for name, home in homes.items()]
        for run_no in range(args.runs):
            for n in args.levels:
                for bot in bots:
                    bot.level(n, run_no)
        return {bot.name: bot.result() for bot in bots}


def _cpu(pid: int) -> float:
    import psutil

    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chats", default="1,10,50", help="comma-separated numbers of chats asking at once")
    parser.add_argument("--runs", type=int, default=3, help="alternating runs over all levels")
    parser.add_argument("--single", type=int, default=10, help="questions one after the other at level 1")
    parser.add_argument("--bursts", type=int, default=3, help="bursts per run at levels ≤ 10 (one above)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds a burst may take")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--quick", action="store_true", help="smoke test: 1 run, 2 single questions, 1 burst")
    parser.add_argument("--no-wait", action="store_true", help="don't wait for a quiet machine")
    parser.add_argument("--fast", action="store_true",
                        help="index stage 1 only (no e5 on the answer path); reports go to bot_load_fast.*")
    parser.add_argument("--both", action="store_true",
                        help="both bots side by side, taking turns (bot_load.* and bot_load_fast.*)")
    args = parser.parse_args()
    args.levels = sorted({int(x) for x in args.chats.split(",") if x.strip()})
    if args.quick:
        args.runs, args.single, args.bursts = 1, 2, 1
    names = ["bot_load", "bot_load_fast"] if args.both else ["bot_load_fast" if args.fast else "bot_load"]
    info = machine_info(wait_for_quiet(skip=args.quick or args.no_wait))
    with tempfile.TemporaryDirectory(prefix="newsdesk-bot-load-") as tmp:
        scratch = Path(tmp)
        homes = {name: scratch / name for name in names}
        envs = {name: clean_env(homes[name], **VARIANTS[name].settings) for name in names}
        stats = {}
        for name in names:
            log(f"indexing examples/articles for {name} ({VARIANTS[name].stages})")
            run_json([sys.executable, "-m", "newsdesk.bot.cli", "index", str(EXAMPLES), "--json",
                      *VARIANTS[name].index_args], envs[name])
            stats[name] = run_json(STATS, envs[name])
        results = run(args, homes, scratch)
        for name in names:  # after the run: a stage-1-only bot must still have no stage-2 vectors
            results[name]["stats_after"] = run_json(STATS, envs[name])
    problems = False
    datas = {}
    for name in names:
        md, fig, datas[name] = report(args, name, results[name], stats[name], info, others=len(names) - 1)
        for path in write_report(args.out, name, md, datas[name], fig):
            log(f"wrote {path}")
        print(md)
        problems = problems or bool(results[name]["problems"])
    if len(names) > 1:
        fig = comparison_chart(datas)
        fig.tight_layout()
        fig.savefig(args.out / "bot_load_both.png", dpi=110)
        log(f"wrote {args.out / 'bot_load_both.png'}")
    return 1 if problems else 0


def comparison_chart(datas: dict[str, dict]):
    """The bots of one ``--both`` run on one chart: p50 and p95 per level, each bot's 2× goal line."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.4))
    for n, (name, data) in enumerate(datas.items()):
        levels, summary, color = data["levels"], data["summary"], f"C{n}"
        ax.plot(levels, [summary[str(x)]["p95_s"] for x in levels], "o-", color=color,
                label=f"{VARIANTS[name].stages}: p95")
        ax.plot(levels, [summary[str(x)]["p50_s"] for x in levels], "o--", color=color, alpha=0.6,
                label=f"{VARIANTS[name].stages}: p50")
        if "1" in summary:
            ax.axhline(2 * summary["1"]["p95_s"], color=color, lw=0.8, ls=":",
                       label=f"{VARIANTS[name].stages}: goal at 10 chats (2× 1-chat p95)")
    _latency_axes(ax, levels, "newsdesk bot, offline mode: both stages vs stage 1 only (one run, taking turns)")
    ax.legend(fontsize=8)
    return fig


def _latency_axes(ax, levels: list[int], title: str) -> None:
    ax.set_xscale("log")
    ax.set_xticks(levels)
    ax.set_xticklabels([str(n) for n in levels])
    ax.set_xlabel("chats asking at once")
    ax.set_ylabel("message → final reply (s)")
    ax.set_title(title, fontsize=10)


def report(args, name: str, result: dict, stats: dict, info: dict, others: int = 0):
    levels = args.levels
    samples = result["samples"]
    summary = {}
    for n in levels:
        runs = samples[n]
        summary[n] = {"answers": sum(len(r) for r in runs),
                      "p50_s": median(percentile(r, 50) for r in runs),
                      "p95_s": median(percentile(r, 95) for r in runs),
                      "max_s": max(max(r) for r in runs if r),
                      "p95_per_run_s": [round(percentile(r, 95), 3) for r in runs]}
    ratios = {}
    if 1 in summary:
        for n in levels:
            per_run = [percentile(a, 95) / percentile(b, 95)
                       for a, b in zip(samples[n], samples[1], strict=False)]
            ratios[n] = median(per_run)
    rows = [[n, summary[n]["answers"], fmt(summary[n]["p50_s"], 2), fmt(summary[n]["p95_s"], 2),
             fmt(summary[n]["max_s"], 2), fmt(ratios.get(n), 2) if n in ratios else "—",
             ", ".join(f"{x:.2f}" for x in summary[n]["p95_per_run_s"])] for n in levels]
    table = markdown_table(["chats at once", "answers", "p50, s", "p95, s", "max, s", "p95 / 1-chat p95",
                            "p95 per run, s"], rows)
    problems = result["problems"]
    checks = ("**No message lost or answered twice**: every one of the "
              f"{result['asked']} questions (warm-up included) got exactly one answer replying to it, none "
              "was an apology, nothing went to a chat that did not ask." if not problems else
              "**Problems found:**\n\n" + "\n".join(f"- {p}" for p in problems[:30]))
    goal = ""
    if 10 in ratios:
        ok = ratios[10] <= 2.0
        goal = (f"Goal: p95 with 10 chats ≤ 2× single-chat p95 — **{'met' if ok else 'missed'}** "
                f"(ratio {ratios[10]:.2f}: {summary[10]['p95_s']:.2f} s vs {summary[1]['p95_s']:.2f} s).")
    answered = max(result['asked'] - 1, 1)
    variant = VARIANTS[name]
    turns = ("\n\nThe other bot of `--both` (the other index) ran at the same time, idle while this one was "
             "asked: the two took turns at each level, so that a slow spell of the machine hit both. Both on one "
             "chart: [bot_load_both.png](bot_load_both.png)." if others else "")
    md = f"""# The Telegram bot under load

Command: `{command_line()}` ({args.runs} alternating run(s); level 1: {args.single} questions one after the
other per run; 10 chats: {args.bursts} burst(s) per run; larger levels: one burst per run; medians over runs).{turns}

{machine_note(info, load_1min())}

The real bot (`newsdesk bot`, its own process, offline mode) long-polls the fake Bot API server of
`tests/fake_telegram.py` on 127.0.0.1. Index: `examples/articles` ({stats.get('articles')} article,
{stats.get('chunks')} passages, {variant.description}). Questions: the {len(seed_questions())} seed questions about that
article, in turn. Latency: from the fake server queueing the question to it receiving the answer's last
message.

{table}

![bot latency]({name}.png)

{goal}

{checks}

Bot process after the run: RSS {result['bot_rss_mb']:.0f} MB; {result['bot_cpu_s']:.0f} CPU-seconds for
{answered} answers ({result['bot_cpu_s'] / answered * 1000:.0f} ms of CPU per answer).
"""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    ax.plot(levels, [summary[n]["p50_s"] for n in levels], "o--", label="p50")
    ax.plot(levels, [summary[n]["p95_s"] for n in levels], "o-", label="p95")
    if 1 in summary:
        ax.axhline(2 * summary[1]["p95_s"], color="grey", lw=0.8, ls=":",
                   label="goal at 10 chats: 2× 1-chat p95")
    _latency_axes(ax, levels, f"newsdesk bot, offline mode, {variant.stages}; fake Bot API on 127.0.0.1")
    ax.legend()
    data = {"machine": info, "levels": levels, "summary": {str(k): v for k, v in summary.items()},
            "ratios_p95_vs_single": {str(k): v for k, v in ratios.items()}, "problems": problems,
            "samples_s": {str(k): v for k, v in samples.items()}, "bot_rss_mb": result["bot_rss_mb"],
            "bot_cpu_s": result["bot_cpu_s"], "stats": stats, "stats_after": result.get("stats_after")}
    return md, fig, data


if __name__ == "__main__":
    sys.exit(main())
