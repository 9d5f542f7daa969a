"""👍/👎 votes on answers: recorded one JSON line each in ``<home>/feedback.jsonl``, read back as a summary
(``newsdesk feedback``) and as questions for ``newsdesk eval``.

A vote line holds what is needed to learn from it without the bot that gave the answer: when, who (chat and
user ids), the answer's key (that of its source buttons), the vote ("up" or "down"), the question (and the
standalone question it was read as), the answer's mode, whether it abstained, its text, its citations (number,
article id, quote) and the ids of the passages retrieved for it.

The file is only ever appended to: each vote is one ``write`` of one whole line to a file opened with
``O_APPEND``, so the bot and another process can vote at once without mixing lines. A second vote of the same
user on the same answer is appended too; when the file is read the last one wins (``latest``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections import Counter, defaultdict
from pathlib import Path

from newsdesk.index.errors import NewsdeskError

from .answers import ELLIPSIS, Answer
from .render import printable

log = logging.getLogger(__name__)

VOTES = {"+": "up", "up": "up", "👍": "up", "-": "down", "down": "down", "👎": "down"}
SIGN = {"up": "👍", "down": "👎"}
WORST_SHOWN = 10  # questions listed under "most 👎"


def vote_record(answer_key: str, answer: Answer, vote: str, *, chat: int | str | None, user: int | str | None,
                now: float | None = None) -> dict:
    """The line a vote is recorded as. ``vote``: "+"/"up"/"👍" or "-"/"down"/"👎" (anything else is a bug)."""
    if vote not in VOTES:
        raise ValueError(f"not a vote: {vote!r}")
    return {
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if now is None else now)),
        "chat": chat, "user": user, "answer_key": answer_key, "vote": VOTES[vote],
        "question": answer.question, "standalone_question": answer.standalone_question,
        "mode": answer.mode, "abstained": answer.abstained, "answer": answer.text,
        "citations": [{"n": c.n, "article_id": c.article_id, "quote": c.quote} for c in answer.citations],
        "retrieved": list(answer.retrieved),
    }


def record_vote(path: Path, answer_key: str, answer: Answer, vote: str, *, chat: int | str | None,
                user: int | str | None) -> dict:
    """Append the vote on ``answer`` to ``path`` (one line, one write) and return the line's record. Blocks
    (a write and an fsync): the bot calls it in a worker thread."""
    record = vote_record(answer_key, answer, vote, chat=chat, user=user)
    data = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)  # questions are private
        try:
            written = os.write(fd, data)
            while written < len(data):  # a regular file takes it whole; only a full disk could stop it short
                written += os.write(fd, data[written:])
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise NewsdeskError(f"cannot record the vote in {path}: {exc.strerror or type(exc).__name__}") from exc
    return record


# -- reading ----------------------------------------------------------------------------------------------------

def read_records(path: Path) -> list[dict]:
    """Every vote line of ``path`` in file order (none when it does not exist). A damaged line (not JSON, or
    not a vote) is skipped, with one warning for all of them."""
    try:
        lines = path.read_bytes().decode("utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise NewsdeskError(f"cannot read {path}: {exc.strerror or type(exc).__name__}") from exc
    records, damaged = [], 0
    for line in lines:
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if is_vote(record):
            records.append(record)
        else:
            damaged += 1
    if damaged:
        log.warning("%s: %d damaged line(s) skipped", path, damaged)
    return records


def is_vote(record) -> bool:
    """Whether a parsed JSON line is a vote line (``vote_record``)."""
    return (isinstance(record, dict) and record.get("vote") in SIGN and isinstance(record.get("question"), str)
            and "answer_key" in record)


def latest(records: list[dict]) -> list[dict]:
    """One vote per user and answer, the last one given, in the order the votes were last given."""
    last: dict[tuple, dict] = {}
    for record in records:
        key = (str(record.get("chat")), str(record.get("answer_key")), str(record.get("user")))
        last.pop(key, None)
        last[key] = record
    return list(last.values())


def _question_key(question: str) -> str:
    return re.sub(r"\s+", " ", question).strip().casefold()


def summarise(votes: list[dict]) -> dict:
    """Counts, the rate of 👍 per answer mode, and the questions with the most 👎 (of the ``latest`` votes)."""
    per_mode: dict[str, Counter] = defaultdict(Counter)
    per_question: dict[str, dict] = {}
    for v in votes:
        per_mode[v.get("mode") or "unknown"][v["vote"]] += 1
        q = per_question.setdefault(_question_key(v["question"]), {"question": v["question"], "up": 0, "down": 0})
        q[v["vote"]] += 1
    worst = sorted((q for q in per_question.values() if q["down"]), key=lambda q: (-q["down"], q["up"]))
    up = sum(v["vote"] == "up" for v in votes)
    return {
        "votes": len(votes), "up": up, "down": len(votes) - up,
        "up_rate": round(up / len(votes), 4) if votes else None,
        "answers": len({(str(v.get("chat")), v.get("answer_key")) for v in votes}),
        "users": len({str(v.get("user")) for v in votes}),
        "per_mode": {mode: {"votes": c["up"] + c["down"], "up": c["up"], "down": c["down"],
                            "up_rate": round(c["up"] / (c["up"] + c["down"]), 4)}
                     for mode, c in sorted(per_mode.items())},
        "worst_questions": worst[:WORST_SHOWN],
    }


def format_feedback(votes: list[dict], summary: dict) -> str:
    """``newsdesk feedback``: the votes, oldest first, then the summary."""
    if not votes:
        return "No votes yet: the bot's 👍/👎 buttons under each answer record them."
    lines = [f"{v['time'].replace('T', ' ').rstrip('Z')}  {SIGN[v['vote']]}  {v.get('mode') or '?':<10}  "
             f"{printable(_short(v['question']))}" for v in votes]
    s = summary
    lines += ["", f"{s['votes']} votes on {s['answers']} answers by {s['users']} users: {s['up']} 👍, {s['down']} 👎",
              "👍 rate per mode: " + ", ".join(f"{mode} {m['up_rate']:.0%} ({m['up']} of {m['votes']})"
                                              for mode, m in s["per_mode"].items())]
    if s["worst_questions"]:
        lines.append("Most 👎:")
        lines += [f"  {q['down']} 👎 {q['up']} 👍  {printable(_short(q['question']))}" for q in s["worst_questions"]]
    return "\n".join(lines)


def _short(text: str, limit: int = 100) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


# -- as questions for `newsdesk eval` ----------------------------------------------------------------------------

def eval_questions(records: list[dict]) -> list[dict]:
    """The voted questions as ``bot.evaluate.read_questions`` records, each question once. The gold of a
    question (``answers``) is the quotes cited by its 👍 answers: what a reader approved of, which retrieval
    should keep finding; a question with only 👎 has no gold (it is asked, not scored). ``expect`` is what the
    👍 answers did ("answer" or "abstain"), unknown when only 👎."""
    grouped: dict[str, dict] = {}
    for v in latest(records):
        q = grouped.setdefault(_question_key(v["question"]), {"question": v["question"], "answers": [],
                                                              "article": None, "up": 0, "down": 0, "expect": None})
        q[v["vote"]] += 1
        if v["vote"] != "up":
            continue
        q["expect"] = q["expect"] or ("abstain" if v.get("abstained") else "answer")
        for c in v.get("citations") or []:
            quote = max(str(c.get("quote") or "").split(ELLIPSIS), key=len)  # a quote leaving words out: its
            if quote and quote not in q["answers"]:                          # longest verbatim piece
                q["answers"].append(quote)
            q["article"] = q["article"] or c.get("article_id")
    return [{"question": q["question"], "answers": q["answers"], "article": q["article"],
             "record": {"id": f"feedback-{i}", "question": q["question"], "expect": q["expect"], "up": q["up"],
                        "down": q["down"]}}
            for i, q in enumerate(grouped.values(), start=1)]
