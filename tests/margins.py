"""Learning tests that hold by design: the seed, the learning switch and the recorded margins.

Every assertion that training improves something (a loss falls, a reward rises, a margin or an accuracy
grows, a tiny model learns the habit it was trained on) goes through `above`/`below`, which record the figure
and its bound before asserting. `bench/test_margins.py` runs those tests over many seeds, and once more with
learning switched off (each must then fail), and prints the per-test table in docs/testing.md.

Environment (all optional; `make test` sets none of them):
  MEDTUNE_TEST_SEED=N           seed of the tiny models' weights, the data generators and `train.seed`
                                (0, the default, is the suite's own seed)
  MEDTUNE_TEST_NO_LEARNING=1    scale every learning rate by 1e-9: training runs but cannot move the weights
  MEDTUNE_TEST_MARGINS=FILE     append one JSON line per checked figure to FILE
"""

from __future__ import annotations

import json
import os

SEED = int(os.environ.get("MEDTUNE_TEST_SEED", "0"))
LEARNING = not os.environ.get("MEDTUNE_TEST_NO_LEARNING")


def lr(value: float) -> float:
    """The learning rate a learning test asks for; near zero (the update switched off) in the no-learning check."""
    return value if LEARNING else value * 1e-9


def train_seed(default: int = 42) -> int:
    """`train.seed` for the stage under test: the stages' default at the suite's own seed."""
    return default + SEED


def _record(name: str, value: float, bound: float, op: str) -> None:
    path = os.environ.get("MEDTUNE_TEST_MARGINS")
    if not path:
        return
    test = os.environ.get("PYTEST_CURRENT_TEST", "?").split(" (")[0]
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps({"test": test, "name": name, "value": float(value), "bound": float(bound), "op": op,
                            "seed": SEED, "learning": LEARNING}) + "\n")


def above(name: str, value: float, bound: float, context=None) -> None:
    """Assert value > bound (a figure that learning raises), recording both first."""
    _record(name, value, bound, ">")
    assert value > bound, (name, value, bound, context)


def below(name: str, value: float, bound: float, context=None) -> None:
    """Assert value < bound (a figure that learning lowers), recording both first."""
    _record(name, value, bound, "<")
    assert value < bound, (name, value, bound, context)
