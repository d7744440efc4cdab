"""Smoke test of bench/deid.py: it runs on a small set, prints its tables and writes metrics for every type."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from medtune.data.deid import PHI_TYPES as ALL_TYPES

# the types bench/deid.py labels (the newer ones are scored by bench/deid_faker.py)
PHI_TYPES = ("EMAIL", "PHONE", "ID", "MRN", "INSURANCE", "DATE", "ADDRESS", "IP")
ROOT = Path(__file__).resolve().parents[1]


def _run(tmp_path: Path, name: str, *args: str) -> tuple[str, dict]:
    out = tmp_path / name
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "deid.py"), "--n", "150", "--json", str(out), *args],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout, json.loads(out.read_text(encoding="utf-8"))


def test_bench_runs_and_reports_every_type(tmp_path):
    stdout, m = _run(tmp_path, "a.json", "--seed", "3")
    assert "| type | gold | exact P |" in stdout and "| naive (@-words, 7+ digit runs) |" in stdout
    assert "medtune / naive: recall" in stdout
    for scoring in ("exact", "overlap"):
        for t in (*PHI_TYPES, "ALL"):
            assert {"precision", "recall", "f1", "gold", "pred"} <= set(m[scoring][t]), (scoring, t)
        assert all(m[scoring][t]["gold"] > 0 for t in PHI_TYPES)  # every type is in the set
    assert m["overlap"]["ALL"]["recall"] > 0.9 and m["overlap"]["ALL"]["precision"] > 0.9
    assert m["type_blind"]["naive"]["recall"] < m["type_blind"]["ours"]["recall"]
    assert set(m["handwritten"]) == {"A", "B"}
    assert m["sentences_per_s"]["ours"] > 0


def test_bench_is_seeded(tmp_path):
    _, a = _run(tmp_path, "a.json", "--seed", "7")
    _, b = _run(tmp_path, "b.json", "--seed", "7")
    _, c = _run(tmp_path, "c.json", "--seed", "8")
    gold = lambda m: [m["exact"][t]["gold"] for t in PHI_TYPES]  # noqa: E731
    assert gold(a) == gold(b) and a["exact"] == b["exact"]
    assert gold(a) != gold(c)


def test_faker_bench_scores_every_type_on_both_sets(tmp_path):
    out = tmp_path / "f.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "deid_faker.py"), "--seeds", "0", "--n", "40",
                           "--speed-mb", "0.01", "--sets", "faker,handwritten", "--json", str(out)],  # never the held-out set
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    m = json.loads(out.read_text(encoding="utf-8"))
    assert set(m["results"]) == {"medtune/faker", "medtune/handwritten"}
    for name in ("medtune/faker", "medtune/handwritten"):
        scores = m["results"][name]["scores"]
        assert all(scores[t]["exact"]["gold"] > 0 for t in ALL_TYPES), name  # every type is in both sets
        assert scores["STRUCTURED"]["overlap"]["recall"] > 0.9 and scores["NAME"]["overlap"]["recall"] > 0.8
        assert 0 <= scores["ALL"]["removed"] <= 1
    assert m["mb_per_s"] > 0
