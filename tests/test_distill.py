"""`medtune distill`: on-policy distillation (TRL GKD) of a tiny teacher into a tiny LoRA student."""

from pathlib import Path

import pytest

from margins import SEED, below, lr, train_seed
from medtune import runs
from medtune.cli import main
from tiny import save_tiny, tiny_tokenizer

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "distill_demo.yaml"
SETTINGS = ["data.path=medtune:demo/sft.jsonl", "data.max_samples=48", "data.val_size=12", "data.max_length=320",
            "train.batch_size=4", "train.max_steps=10", "train.bf16=false", "train.logging_steps=1",
            "lmbda=0.5", "beta=0.5", "max_new_tokens=12", "train.warmup=0"]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """A student (hidden 32) and a larger teacher (hidden 64) of one tokenizer, different random weights."""
    root = tmp_path_factory.mktemp("distill")
    return save_tiny(root / "student", seed=SEED), save_tiny(root / "teacher", hidden=64, seed=SEED + 1)


def distil(student, teacher, out, *extra):
    return main(["distill", f"model.name_or_path={student}", f"teacher.name_or_path={teacher}",
                 f"output_dir={out}", f"train.seed={train_seed()}", *SETTINGS, *extra])


@pytest.mark.slow
def test_the_student_moves_towards_the_teacher_and_not_without_learning(pair, tmp_path):
    student, teacher = pair
    assert distil(student, teacher, tmp_path / "run", f"train.learning_rate={lr(2e-2)}") == 0
    m = runs.read_manifest(tmp_path / "run")
    assert m["status"] == "completed" and m["stage"] == "distill" and m["adapter"]
    assert m["teacher"]["base"] == str(teacher) and m["config"]["lmbda"] == 0.5
    before, after = m["metrics"]["heldout_kl_before"], m["metrics"]["heldout_kl_after"]
    # the KL to the teacher on held-out dialogues falls: median 0.869, worst 0.897 of its start over seeds 0-3
    # (tests/seed_sweep.py --seeds 4 -k test_distill); 1.0 with learning off
    below("heldout_kl_after / before", after / before, 0.95)
    assert (tmp_path / "run" / "adapter_model.safetensors").is_file()

    # the control: learning off (a vanishing rate), the same steps and samples: the KL stays where it was
    assert distil(student, teacher, tmp_path / "off", "train.learning_rate=1e-12") == 0
    off = runs.read_manifest(tmp_path / "off")["metrics"]
    assert off["heldout_kl_before"] == pytest.approx(before)
    assert off["heldout_kl_after"] == pytest.approx(before, rel=1e-4)


def test_refusals_are_one_line(pair, tmp_path, capsys):
    student, teacher = pair
    assert main(["distill", f"model.name_or_path={student}", "data.path=medtune:demo/sft.jsonl",
                 f"output_dir={tmp_path / 'a'}"]) == 2
    assert "teacher.name_or_path" in capsys.readouterr().err
    assert distil(student, teacher, tmp_path / "b", "lmbda=1.5") == 2
    assert "lmbda" in capsys.readouterr().err
    other = tmp_path / "other"  # a teacher whose tokenizer holds tokens the student's lacks
    tok = tiny_tokenizer()
    tok.add_tokens(["hypertension", "paracetamol"])
    save_tiny(other, tokenizer=tok)
    assert distil(student, other, tmp_path / "c") == 2
    err = capsys.readouterr().err
    assert "tokenizer is not the student's" in err.splitlines()[-1] and "Traceback" not in err
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()


def test_the_demo_recipe_validates(pair):
    student, teacher = pair
    assert main(["validate", str(RECIPE), f"model.name_or_path={student}", f"teacher.name_or_path={teacher}"]) == 0
