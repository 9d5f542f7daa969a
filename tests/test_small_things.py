"""Small things that add up (issue 14): a damaged lexical cache heals with one warning, and a file name cannot
forge lines of the index report."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from newsdesk.index.lexical import BM25
from tests.conftest import make_settings, run_cli

ARTICLES = {
    "volcano.txt": "Volcano erupts near Grindavik\n\nThe Fagradalsfjall volcano erupted near Grindavik on Tuesday; "
                   "lava flowed for three kilometres towards the town.\n",
    "chess.txt": "Chess final ends in a draw\n\nThe world chess championship final in Madrid ended in a draw after "
                 "ninety-four moves.\n",
    "port.txt": "Blast at the port\n\nانفجار ضخم في مرفأ بيروت يدمر أحياء كاملة من المدينة.\n",
}
QUERIES = ("chess final Madrid", "lava Grindavik", "مرفأ بيروت")


def _damaged(good: bytes) -> dict[str, bytes]:
    """What a crash, a full disk or a bad sector can leave instead of the saved index."""
    flipped = bytearray(good)
    for at in range(len(good) // 3, len(good), max(len(good) // 7, 1)):  # bit flips inside the arrays
        flipped[at] ^= 0x10
    directory = good.find(b"PK\x01\x02")  # the zip's central directory: its first entry
    header_flip = bytearray(good)
    header_flip[directory + 10] ^= 0x01  # that member's compression method: "not supported"
    encrypted = bytearray(good)
    encrypted[directory + 8] ^= 0x01  # its "encrypted" flag
    return {"truncated": good[: len(good) // 2], "empty": b"", "bit flips": bytes(flipped),
            "compression flag": bytes(header_flip), "encrypted flag": bytes(encrypted),
            "not a zip": b"this is not an index at all\n" * 10, "cut at the end": good[:-3]}


def _hits(home) -> list[list[str]]:
    out = []
    for query in QUERIES:
        proc = run_cli("search", "--json", "--k", "3", query, home=home, check=True)
        out.append([h["chunk_id"] for h in json.loads(proc.stdout)["hits"]])
    return out


def test_a_damaged_lexical_cache_is_rebuilt_with_one_warning(tmp_path):
    folder = tmp_path / "articles"
    folder.mkdir()
    for name, text in ARTICLES.items():
        (folder / name).write_text(text, encoding="utf-8")
    home = tmp_path / "home"
    run_cli("index", "--fast", str(folder), home=home, check=True)
    good_hits = _hits(home)  # the first search saves the lexical index
    assert good_hits[0][0].startswith("chess") and good_hits[2][0].startswith("port")
    [path] = make_settings(home).lexical_dir.glob("*.npz")
    good = path.read_bytes()

    for kind, data in _damaged(good).items():
        path.write_bytes(data)
        proc = run_cli("search", "--json", "--k", "3", QUERIES[0], home=home)
        assert proc.returncode == 0, (kind, proc.stderr)
        warnings = [line for line in proc.stderr.splitlines() if "WARNING" in line]
        assert len(warnings) == 1 and "lexical index" in warnings[0] and "damaged" in warnings[0], (kind, proc.stderr)
        assert [h["chunk_id"] for h in json.loads(proc.stdout)["hits"]] == good_hits[0], kind
        rebuilt = BM25.load(path)  # healed: saved again, whole
        assert rebuilt is not None and [c for c, _ in rebuilt.top(QUERIES[2], 3)][:1] == good_hits[2][:1], kind
    assert _hits(home) == good_hits  # and the next searches are the same
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_temporary_files_of_a_save_killed_midway_are_cleaned_up(tmp_path):
    index = BM25().build([("a#0", "a", "lava flowed towards the town")], {"a": "h"})
    path = tmp_path / "lexical" / "c.npz"
    index.save(path)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    stale = path.with_name(f".{path.name}.{int(dead.stdout)}.1234.tmp")  # what kill -9 mid-save leaves
    stale.write_bytes(b"PK\x03\x04 half a file")
    mine = path.with_name(f".{path.name}.{os.getppid()}.1.tmp")  # a live process mid-save: kept
    mine.write_bytes(b"PK\x03\x04 being written")
    index.save(path)
    assert not stale.exists() and mine.exists()
    assert BM25.load(path).top("lava", 1)[0][0] == "a#0"


def test_a_file_name_cannot_forge_lines_of_the_index_report(tmp_path):
    folder = tmp_path / "articles"
    folder.mkdir()
    (folder / "chess.txt").write_text(ARTICLES["chess.txt"], encoding="utf-8")
    forged = "evil\n  failed: x.txt: forged"
    names = [f"{forged}.txt", "cr\rover.txt", "esc\x1b[2Kclear.txt", "rtl\u202etxt.exe.txt"]
    for name in names:
        (folder / name).write_bytes(b"")  # empty: each one fails, and is reported by name
    home = tmp_path / "home"

    proc = run_cli("index", "--fast", str(folder), home=home)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("1 added, 0 updated") and len(lines) == 1 + len(names), proc.stdout
    assert all(line.startswith(f"  failed: {folder}/") and line.endswith(": empty file") for line in lines[1:])
    assert not any(c in proc.stdout for c in "\r\x1b\u202e")
    for shown in ("evil\\n  failed: x.txt: forged.txt", "cr\\rover.txt", "esc\\x1b[2Kclear.txt",
                  "rtl\\u202etxt.exe.txt"):
        assert sum(shown in line for line in lines) == 1, (shown, proc.stdout)

    report = json.loads(run_cli("index", "--fast", "--json", str(folder), home=home).stdout)
    assert sorted(f["source"] for f in report["failed"]) == sorted(str(folder / n) for n in names)  # exact
