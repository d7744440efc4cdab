"""The DPO family: every loss raises the held-out chosen-minus-rejected margin; the LoRA reference is the
adapter switched off; precomputed reference log-probs change nothing; runs chain from SFT and resume."""

import json

import pytest

from medtune.config import load_config
from medtune.data import preference
from medtune.stages import common, dpo, sft
from margins import SEED, above, lr, train_seed
from test_rm import write_pairs
from tiny import save_tiny


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("m") / "tiny", hidden=64, seed=SEED)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    return write_pairs(tmp_path_factory.mktemp("d") / "pairs.jsonl", n=48, seed=SEED)


def config(model, data, out, *extra):
    return load_config(dpo.DPOConfig, None, [
        f"model.name_or_path={model}", f"data.path={data}", f"output_dir={out}", "data.val_size=8",
        "train.max_steps=16", "train.learning_rate=5e-3", "train.logging_steps=4", f"train.seed={train_seed()}", *extra])


@pytest.mark.parametrize("loss", ["dpo", "ipo", "hinge", "orpo", "simpo"])
def test_each_loss_raises_the_held_out_margin(tiny_model, pairs, tmp_path, loss):
    extra = ["beta=2.0"] if loss == "simpo" else []
    out = dpo.run(config(tiny_model, pairs, tmp_path / loss, f"loss={loss}", f"train.learning_rate={lr(5e-3)}", *extra))
    m = json.loads((out / "medtune.json").read_text())
    assert m["stage"] == "dpo" and m["loss"] == loss and m["status"] == "completed"
    metrics = m["metrics"]
    # held-out pairs never seen in training: chosen gains on rejected, by a wide margin
    above("heldout_margin_gain", metrics["heldout_margin_gain"], 5.0, metrics)
    above("heldout_reward_accuracy", metrics["heldout_reward_accuracy"], 0.7, metrics)
    above("chosen - rejected logp change",
          metrics["heldout_chosen_logp_change"] - metrics["heldout_rejected_logp_change"], 0, metrics)
    assert any("rewards/margins" in h for h in m["history"])


def test_lora_reference_is_the_adapter_switched_off_and_full_gets_a_frozen_copy(tiny_model, pairs, tmp_path):
    from peft import PeftModel

    from medtune import models
    from medtune.data import templates

    def build(*extra):
        cfg = config(tiny_model, pairs, tmp_path / "x", *extra)
        loaded = models.load(cfg.model)
        fmt = templates.resolve_format(loaded.tokenizer)
        enc = dpo.encode(preference.read_pair_files(cfg.data)[0][:8], loaded.tokenizer, fmt, 1024, {})
        rows = dpo.trl_rows(enc, loaded.tokenizer, cfg.loss)
        return dpo.trl_trainer(cfg, loaded.model, loaded.tokenizer, rows, [], tmp_path / "x", [])

    lora = build()
    assert isinstance(lora.model, PeftModel) and lora.ref_model is None  # no second copy of the weights
    full = build("lora.method=full")
    assert full.ref_model is not None and not any(p.requires_grad for p in full.ref_model.parameters())
    assert build("lora.method=full", "precompute_ref=true").ref_model is None


def test_sft_weight_keeps_the_chosen_answers_likely(tiny_model, pairs, tmp_path):
    """The next-token term on the chosen answer (sft_weight, RPO): plain DPO may lower both answers as long as the
    rejected one falls faster; with the term the held-out chosen answers end up more likely than without it."""
    plain = dpo.run(config(tiny_model, pairs, tmp_path / "plain", "train.max_steps=8"))
    kept = dpo.run(config(tiny_model, pairs, tmp_path / "kept", "train.max_steps=8", "sft_weight=1.0"))
    mp, mk = (json.loads((p / "medtune.json").read_text()) for p in (plain, kept))
    assert mk["config"]["sft_weight"] == 1.0
    above("chosen logp change, with - without the term",
          mk["metrics"]["heldout_chosen_logp_change"] - mp["metrics"]["heldout_chosen_logp_change"], 0, mk["metrics"])
    above("heldout_margin_gain with the term", mk["metrics"]["heldout_margin_gain"], 0, mk["metrics"])


def test_precomputed_reference_gives_the_same_run(tiny_model, pairs, tmp_path):
    a = dpo.run(config(tiny_model, pairs, tmp_path / "a", "train.max_steps=6"))
    b = dpo.run(config(tiny_model, pairs, tmp_path / "b", "train.max_steps=6", "precompute_ref=true"))
    ma, mb = (json.loads((p / "medtune.json").read_text())["metrics"] for p in (a, b))
    assert mb["heldout_logp_margin_after"] == pytest.approx(ma["heldout_logp_margin_after"], abs=1e-3)
    assert mb["eval_rewards/margins"] == pytest.approx(ma["eval_rewards/margins"], abs=1e-3)


def test_dpo_chains_from_an_sft_run_whose_model_is_the_reference(tiny_model, pairs, tmp_path):
    from medtune import models
    from medtune.data import templates

    sft_data = tmp_path / "sft.jsonl"
    sft_data.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"Question {i}?"},
                                                         {"role": "assistant", "content": "Rest and water."}]}) + "\n"
                                for i in range(16)))
    sft_run = sft.run(load_config(sft.SFTConfig, None, [f"model.name_or_path={tiny_model}", f"data.path={sft_data}",
                                                        f"output_dir={tmp_path / 'sft'}", "train.max_steps=4",
                                                        "train.learning_rate=5e-3"]))
    out = dpo.run(config(sft_run, pairs, tmp_path / "dpo", "train.max_steps=4"))
    m = json.loads((out / "medtune.json").read_text())
    assert m["model"]["weights"] == str(sft_run.resolve()) and m["model"]["base"] == str(tiny_model.resolve())
    # the margins' starting point is the SFT model, not the base
    loaded = models.load(models.ModelConfig(name_or_path=str(sft_run)))
    fmt = templates.resolve_format(loaded.tokenizer)
    enc = dpo.encode(preference.read_pair_files(config(sft_run, pairs, tmp_path / "y").data)[0], loaded.tokenizer,
                     fmt, 1024, {})
    _, val = common.split_validation(enc, 8, 42)
    chosen, _ = dpo.margins(loaded.model, val, loaded.tokenizer.pad_token_id, 4)
    assert chosen == pytest.approx(m["heldout_before"][0], abs=1e-3)
    assert models.load(models.ModelConfig(name_or_path=str(out))).chain == [str(sft_run.resolve()), str(out.resolve())]


def test_resume_continues_to_the_same_result(tiny_model, pairs, tmp_path):
    from transformers import TrainerCallback

    common = ["train.max_steps=6", "train.save_steps=3", "train.learning_rate=1e-3"]
    straight = dpo.run(config(tiny_model, pairs, tmp_path / "a", *common))

    class Crash(TrainerCallback):
        def on_save(self, args, state, control, **kw):
            if state.global_step == 3:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        dpo.run(config(tiny_model, pairs, tmp_path / "b", *common), callbacks=[Crash()])
    resumed = dpo.run(config(tiny_model, pairs, tmp_path / "b", *common, "resume=true"))
    ma, mb = (json.loads((p / "medtune.json").read_text())["metrics"] for p in (straight, resumed))
    assert mb["steps"] == 6
    assert mb["heldout_logp_margin_after"] == pytest.approx(ma["heldout_logp_margin_after"], abs=1e-3)


def test_bad_settings_and_data_stop_before_training(tiny_model, pairs, tmp_path):
    from medtune.cli import main

    assert main(["dpo", f"model.name_or_path={tiny_model}", f"data.path={pairs}", "loss=orpo", "precompute_ref=true",
                 f"output_dir={tmp_path / 'r'}"]) == 2
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "q?", "chosen": "a", "rejected": "b"}\n{"prompt": "q?", "chosen": "a"}\n')
    assert main(["dpo", f"model.name_or_path={tiny_model}", f"data.path={bad}", f"output_dir={tmp_path / 'r'}"]) == 2
    assert main(["dpo", f"model.name_or_path={tiny_model}", f"data.path={pairs}", "loss=kto",
                 f"output_dir={tmp_path / 'r'}"]) == 2
    assert main(["dpo", f"model.name_or_path={tiny_model}", f"data.path={pairs}", "loss=orpo", "sft_weight=1",
                 f"output_dir={tmp_path / 'r'}"]) == 2
    assert main(["dpo", f"model.name_or_path={tiny_model}", f"data.path={pairs}", "sft_weight=-1",
                 f"output_dir={tmp_path / 'r'}"]) == 2
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("system_prompt", [None, ""])
def test_system_prompt_empty_reaches_the_prompts_trl_renders(tmp_path, system_prompt):
    """dpo's `data.system_prompt: ""` left SmolLM2's default system prompt in the prompts DPOTrainer renders
    itself from the tokenizer's template (issue 15 item 9)."""
    from transformers import TrainerCallback

    from test_sft import SMOLLM2_TEMPLATE
    from tiny import tiny_tokenizer

    seen = []

    class Prompts(TrainerCallback):
        def on_train_begin(self, args, state, control, train_dataloader=None, processing_class=None, **kw):
            seen.extend(processing_class.decode(row["prompt_ids"]) for row in train_dataloader.dataset)

    model = save_tiny(tmp_path / "smol", tiny_tokenizer(SMOLLM2_TEMPLATE), hidden=32, seed=SEED)
    data = write_pairs(tmp_path / "pairs.jsonl", n=8)
    extra = [] if system_prompt is None else ["data.system_prompt="]
    out = dpo.run(config(model, data, tmp_path / "dpo", "train.max_steps=1", "data.val_size=0", "train.batch_size=2",
                         *extra), callbacks=[Prompts()])
    manifest = json.loads((out / "medtune.json").read_text())
    assert seen and all(("named SmolLM" in text) == (system_prompt is None) for text in seen)
    assert (manifest["default_system_prompt"] is None) == (system_prompt == "")
