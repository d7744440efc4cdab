"""bench/serve_throughput.py runs end to end on a tiny model: levels, identical greedy texts, a load run with no 5xx."""

import json
import subprocess
import sys
from pathlib import Path

from tiny import save_tiny

ROOT = Path(__file__).resolve().parents[1]


def test_serve_bench_smoke(tmp_path):
    model = save_tiny(tmp_path / "tiny")
    out = tmp_path / "figures.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "serve_throughput.py"), "--model", str(model),
                           "--n", "4", "--levels", "1,4", "--max-tokens", "12", "--load-requests", "30",
                           "--json", str(out)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "x base" in proc.stdout and "load run: 30 requests" in proc.stdout
    figures = json.loads(out.read_text())
    assert figures["same_texts"] and [lv["concurrency"] for lv in figures["levels"]] == [1, 4]
    assert all(lv["same_texts"] == 4 and lv["tokens"] > 0 for lv in figures["levels"])
    load = figures["load"]
    assert load["5xx"] == 0 and load["wrong_count"] == 0 and load["valid_ok"] + load["invalid_ok"] == 30
    assert load["invalid_ok"] == 12 and load["peak_rss_mib"] > 0
