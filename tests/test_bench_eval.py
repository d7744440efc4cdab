"""bench/eval_throughput.py runs, reports its ratios, and its scorers agree item by item (tiny model, fixture
files): medtune with the naive baseline always, and with lm-evaluation-harness when the bench extra is installed."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tiny import save_tiny

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "eval"


def run_bench(tmp_path, *extra):
    model = save_tiny(tmp_path / "tiny")
    out = tmp_path / "figures.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "eval_throughput.py"), "--model", str(model),
                           "--file", f"pubmedqa={FIXTURES / 'pubmedqa' / 'ori_pqal.json'}",
                           "--file", f"medmcqa={FIXTURES / 'medmcqa' / 'dev.json'}",
                           "--limit", "3", "--batch-size", "2", "--baseline-limit", "3", "--json", str(out), *extra],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc.stdout, json.loads(out.read_text())


def test_eval_bench_smoke(tmp_path):
    stdout, figures = run_bench(tmp_path, "--no-harness", "--precision", "bf16")  # bf16 on any CPU (emulated without AVX512-BF16)
    assert "ratio medtune / baseline" in stdout and "compute bound" in stdout and "bf16+check bound" in stdout
    for name in ("pubmedqa", "medmcqa"):
        f = figures["tasks"][name]
        rows = f["rows"]
        assert set(rows) == {"medtune", "medtune bf16+check", "baseline"} and f["items"] == 3
        assert rows["medtune bf16+check"]["same_predictions"]  # acc and acc_norm, against medtune fp32
        assert f["bf16_check"]["calibration_items"] == 3 and f["bf16_check"]["rechecked"] == 0  # 3 items: all calibrate
        assert rows["baseline"]["same_predictions"] and rows["baseline"]["accuracy"] == rows["medtune"]["accuracy"]
        assert rows["baseline"]["max_loglik_difference"] < 1e-3
        assert 0 < f["medtune_share_of_bound"]


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("lm_eval") is None, reason="lm-eval not installed (pip install -e .[bench])")
def test_eval_bench_matches_the_harness(tmp_path):
    stdout, figures = run_bench(tmp_path, "--harness-batch-sizes", "1,2")
    assert "ratio medtune / harness best" in stdout
    for f in figures["tasks"].values():
        for name in ("harness bs1", "harness bs2"):
            row = f["rows"][name]
            assert row["same_predictions"] and row["accuracy"] == f["rows"]["medtune"]["accuracy"]
            assert row["max_loglik_difference"] < 1e-3
        assert f["harness_best"] in ("harness bs1", "harness bs2")


def test_eval_bench_skips_without_data(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "eval_throughput.py"),
                           "--file", f"pubmedqa={tmp_path / 'absent.json'}", "--tasks", "pubmedqa"],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("skipped: no data for pubmedqa")
