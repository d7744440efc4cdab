"""Run the learning tests over many seeds, then once with learning switched off, and print their margins.

    .venv/bin/python tests/seed_sweep.py --seeds 10 --jobs 2 > margins.md

Each learning test checks its figures through tests/margins.py (`above`/`below`), which records them when
MEDTUNE_TEST_MARGINS is set. For every figure this prints the bound, the worst and median value over the seeds,
the worst seed's room to spare, and the value with learning off (every learning test must fail then). The
table is docs/testing.md's. Exit code 1 when a test failed on a seed or passed with learning off.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LEARNING_TESTS = [
    "tests/test_pt.py::test_pt_learns_and_reports_the_mixture_it_achieved",
    "tests/test_pt.py::test_streaming_resumes_where_it_stopped",
    "tests/test_pt.py::test_new_vocabulary_starts_at_the_mean_of_its_pieces_and_is_trained",
    "tests/test_sft.py::test_sft_lora_learns_and_writes_a_self_describing_run",
    "tests/test_rm.py::test_lora_reward_model_learns_to_rank_held_out_pairs",
    "tests/test_rm.py::test_custom_architecture_without_a_classification_class",
    "tests/test_dpo.py::test_each_loss_raises_the_held_out_margin",
    "tests/test_ppo.py::test_reward_rises_and_the_kl_penalty_holds_the_policy_near_the_reference",
    "tests/test_grpo.py::test_grpo_raises_a_rule_reward_while_the_kl_stays_bounded",
    "tests/test_grpo.py::test_rloo_raises_the_reward_too",
    "tests/test_grpo.py::test_rm_reward_scores_the_reward_models_chosen_answers_above_its_rejected",
    "tests/test_health_metrics.py::test_tiny_model_trips_exactly_its_flags",
    "tests/test_distill.py::test_the_student_moves_towards_the_teacher_and_not_without_learning",
]


def run(seed: int, learning: bool, tests: list[str], work: Path, threads: int) -> tuple[list[dict], dict[str, bool]]:
    tag = f"{'learn' if learning else 'off'}-{seed}"
    margins, junit = work / f"{tag}.jsonl", work / f"{tag}.xml"
    env = dict(os.environ, MEDTUNE_TEST_SEED=str(seed), MEDTUNE_TEST_MARGINS=str(margins),
               OMP_NUM_THREADS=str(threads))
    env.pop("MEDTUNE_TEST_NO_LEARNING", None)
    if not learning:
        env["MEDTUNE_TEST_NO_LEARNING"] = "1"
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "ignore",
                    f"--junitxml={junit}", *tests], cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    passed = {}
    for case in ET.parse(junit).iter("testcase"):
        name = f"{case.get('classname').split('.')[-1]}::{case.get('name')}"
        passed[name] = not any(child.tag in ("failure", "error") for child in case)
    records = [json.loads(x) for x in margins.read_text().splitlines()] if margins.exists() else []
    print(f"  {tag}: {sum(passed.values())}/{len(passed)} passed", file=sys.stderr, flush=True)
    return records, passed


def room(r: dict) -> float:
    """How far the figure is on the right side of its bound (negative: the check failed)."""
    return r["value"] - r["bound"] if r["op"] == ">" else r["bound"] - r["value"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=10, help="seeds 0..N-1 (default 10)")
    ap.add_argument("--jobs", type=int, default=1, help="pytest processes at once, one thread each when > 1")
    ap.add_argument("-k", dest="only", default="", help="only the learning tests whose id contains one of these "
                                                         "comma-separated texts")
    args = ap.parse_args()
    if args.seeds < 1 or args.jobs < 1:
        ap.error("--seeds and --jobs must be at least 1")
    tests = [t for t in LEARNING_TESTS if any(part in t for part in args.only.split(","))]
    threads = 1 if args.jobs > 1 else 2
    with tempfile.TemporaryDirectory() as tmp:
        jobs = [(s, True) for s in range(args.seeds)] + [(0, False)]
        with ThreadPoolExecutor(args.jobs) as pool:
            results = list(pool.map(lambda j: run(j[0], j[1], tests, Path(tmp), threads), jobs))
    learned, off = results[:-1], results[-1]
    figures: dict[tuple[str, str], dict] = {}
    for records, _ in learned:
        for r in records:
            f = figures.setdefault((r["test"], r["name"]), {"bound": r["bound"], "op": r["op"], "values": {}})
            f["values"][r["seed"]] = r["value"]
    off_values = {(r["test"], r["name"]): r["value"] for r in off[0]}
    print("| test | figure | check | worst seed | median | room at worst | passed | learning off |")
    print("|---|---|---|---|---|---|---|---|")
    bad = 0
    for (test, name), f in figures.items():
        vals = f["values"]
        worst_seed = min(vals, key=lambda s: room({"value": vals[s], **f}))
        worst = vals[worst_seed]
        ok = sum(room({"value": v, **f}) > 0 for v in vals.values())
        o = off_values.get((test, name))
        o_text = "-" if o is None else f"{o:.4g}" + (" (holds)" if room({"value": o, **f}) > 0 else " (fails)")
        short = test.split("::", 1)[1] if "::" in test else test
        print(f"| {short} | {name} | {f['op']} {f['bound']:g} | {worst:.4g} (seed {worst_seed}) | "
              f"{statistics.median(vals.values()):.4g} | {room({'value': worst, **f}):.4g} | {ok}/{len(vals)} | {o_text} |")
    print()
    print("| test | passed over seeds | with learning off |")
    print("|---|---|---|")
    names = sorted({n for _, passed in learned for n in passed})
    for n in names:
        wins = sum(passed.get(n, False) for _, passed in learned)
        still = off[1].get(n)
        bad += (wins < len(learned)) + bool(still)
        print(f"| {n} | {wins}/{len(learned)} | {'PASSED (the test cannot fail!)' if still else 'fails, as it must'} |")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
