"""bench/eval_throughput.py runs, reports its ratio, and its two scorers agree (tiny model, fixture file)."""

import json
import subprocess
import sys
from pathlib import Path

from tiny import save_tiny

ROOT = Path(__file__).resolve().parents[1]


def test_eval_bench_smoke(tmp_path):
    model = save_tiny(tmp_path / "tiny")
    out = tmp_path / "figures.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "eval_throughput.py"), "--model", str(model),
                           "--file", str(ROOT / "tests" / "fixtures" / "eval" / "pubmedqa" / "ori_pqal.json"),
                           "--n", "3", "--batch-size", "2", "--json", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ratio medtune / baseline" in proc.stdout
    figures = json.loads(out.read_text())
    assert figures["same_predictions"] and figures["accuracy_baseline"] == figures["accuracy_medtune"]
    assert figures["max_loglik_difference"] < 1e-3
