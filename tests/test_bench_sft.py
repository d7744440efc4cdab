"""Smoke test of bench/sft_throughput.py on a tiny model (seconds), and of its label-only-logits prototype."""

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch
from tiny import save_tiny

ROOT = Path(__file__).resolve().parents[1]
DEMO_SFT = ROOT / "src" / "medtune" / "assets" / "demo" / "sft.jsonl"


def _bench():
    spec = importlib.util.spec_from_file_location("sft_throughput", ROOT / "bench" / "sft_throughput.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return str(save_tiny(tmp_path_factory.mktemp("tiny")))


def test_smoke_run_prints_table_and_ratio(tiny_model, capsys):
    if not DEMO_SFT.is_file():
        pytest.skip("demo SFT data not present")
    bench = _bench()
    rc = bench.main(["--model", tiny_model, "--data", str(DEMO_SFT), "--examples", "12", "--steps", "3",
                     "--max-length", "512", "--configs", "baseline,medtune,r512-fp32-lab-nodrop"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "| baseline | padded x 4 | bf16 | on |" in out
    assert "| medtune | 512 x 4 |" in out
    assert "medtune (recipe defaults) / baseline useful tokens/s:" in out


def test_missing_data_skips_cleanly(capsys, tmp_path):
    assert _bench().main(["--data", str(tmp_path / "absent.json")]) == 0
    assert "skipped" in capsys.readouterr().out


def test_config_names():
    bench = _bench()
    s = bench.parse_spec("r512-fp32-lab-nodrop", 1024, 4, True)
    assert (s.rows, s.batch, s.bf16, s.labels_only, s.lora_dropout) == (512, 8, False, True, 0.0)
    s = bench.parse_spec("medtune", 1024, 4, True)
    assert (s.rows, s.batch, s.bf16, s.checkpointing, s.lora_dropout) == (1024, 4, True, False, None)
    assert s.labels_only is None  # decided as `medtune sft` decides
    s = bench.parse_spec("r2048-bf16-b1", 1024, 4, False)
    assert (s.batch, s.lora_dropout) == (1, 0.05)  # variants keep MedicalGPT's LoRA unless -nodrop
    with pytest.raises(SystemExit):
        bench.parse_spec("r512", 1024, 4, True)


def test_label_only_loss_matches_full_logits(tiny_model):
    """The prototype (LM head only where a label is trained) gives the model's own token-mean loss."""
    from medtune import models

    bench = _bench()
    BenchTrainer, _ = bench.make_trainer_class()
    model = models.load(models.ModelConfig(name_or_path=tiny_model)).model
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, model.config.vocab_size, (2, 12), generator=g)
    labels = ids.clone()
    labels[:, :5] = -100
    labels[1, 9:] = -100
    pos = torch.tensor([list(range(6)) + list(range(6)), list(range(12))])
    inputs = {"input_ids": ids, "labels": labels, "position_ids": pos}
    n = int((labels[:, 1:] != -100).sum())
    trainer = BenchTrainer.__new__(BenchTrainer)
    trainer.labels_only = True
    with torch.no_grad():
        full = model(**inputs, use_cache=False, num_items_in_batch=n).loss
        lab = BenchTrainer.compute_loss(trainer, model, dict(inputs), num_items_in_batch=n)
    assert math.isclose(float(full), float(lab), rel_tol=1e-5)
