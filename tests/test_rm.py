"""The reward model stage: it learns to rank, on any causal LM (even one without a sequence-classification
class), reads the reward at the right token, saves a loadable head, resumes, and scores files."""

import json
import random

import pytest
import torch

from medtune import models
from medtune.config import load_config
from medtune.data import preference
from medtune.stages import rm
from margins import SEED, above, lr, train_seed
from tiny import TinyGRUConfig, save_tiny, save_tiny_gru, tiny_llama, tiny_tokenizer

QUESTIONS = ["I have a fever.", "My chest hurts.", "I cough at night.", "My head aches.", "I feel thirsty."]
WORDS = "the patient has a fever and cough take rest water pain chest breath".split()


def write_pairs(path, n=80, seed=0):
    """Separable pairs: the chosen answer always ends with the same safety advice, the rejected one with a
    greeting; the bodies are random and shared, so only the ending tells them apart."""
    rng = random.Random(seed)
    with open(path, "w") as f:
        for _ in range(n):
            body = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8)))
            f.write(json.dumps({"prompt": rng.choice(QUESTIONS), "chosen": body + ". Call an ambulance now.",
                                "rejected": body + ". Hello, how are you?"}) + "\n")
    return path


def config(model, data, out, *extra):
    return load_config(rm.RMConfig, None, [
        f"model.name_or_path={model}", f"data.path={data}", f"output_dir={out}", "data.val_size=16",
        "train.max_steps=40", f"train.learning_rate={lr(3e-3)}", "train.logging_steps=10",
        f"train.seed={train_seed()}", *extra])


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("m") / "tiny", hidden=64, seed=SEED)


def test_lora_reward_model_learns_to_rank_held_out_pairs(tiny_model, tmp_path):
    data = write_pairs(tmp_path / "pairs.jsonl", seed=SEED)
    out = rm.run(config(tiny_model, data, tmp_path / "rm"))
    m = json.loads((out / "medtune.json").read_text())
    assert m["stage"] == "rm" and m["status"] == "completed" and m["adapter"] and m["reward_head"]
    above("eval_accuracy", m["metrics"]["eval_accuracy"], 0.9, m["metrics"])
    above("eval_margin gain", m["metrics"]["eval_margin"] - m["metrics"]["eval_margin_before"], 1.0, m["metrics"])
    assert (out / models.REWARD_HEAD_FILE).is_file() and (out / "adapter_model.safetensors").is_file()
    assert {"mean", "std"} <= set(m["reward_stats"])

    # the saved run, loaded again (LoRA merged), gives the rewards the trainer measured
    summary = rm.score_file(str(out), str(data))
    assert summary["pairs"] == 80
    above("score_file accuracy", summary["accuracy"], 0.9, summary)
    loaded = models.load_reward_model(str(out))
    assert not hasattr(loaded.model, "peft_config")


def test_custom_architecture_without_a_classification_class(tmp_path):
    from transformers import AutoModelForSequenceClassification

    with pytest.raises(ValueError, match="Unrecognized configuration class"):
        AutoModelForSequenceClassification.from_config(TinyGRUConfig())
    model_dir = save_tiny_gru(tmp_path / "gru", seed=SEED)
    data = write_pairs(tmp_path / "pairs.jsonl", seed=SEED)
    out = rm.run(config(model_dir, data, tmp_path / "rm"))
    metrics = json.loads((out / "medtune.json").read_text())["metrics"]
    above("eval_accuracy", metrics["eval_accuracy"], 0.9, metrics)
    above("score_file accuracy", rm.score_file(str(out), str(data))["accuracy"], 0.9)


def test_full_finetune_reward_model_round_trips(tiny_model, tmp_path):
    data = write_pairs(tmp_path / "pairs.jsonl", n=40)
    out = rm.run(config(tiny_model, data, tmp_path / "full", "lora.method=full", "train.max_steps=6",
                        "train.learning_rate=1e-3", "data.val_size=8"))
    m = json.loads((out / "medtune.json").read_text())
    assert not m["adapter"] and (out / "model.safetensors").is_file()
    rows = rm.encode_pairs(preference.read_pair_files(config(tiny_model, data, tmp_path / "x").data)[0], tiny_tokenizer(),
                           models_fmt(), 1024, {})
    loaded = models.load_reward_model(str(out))
    c, r = rm.score_rows(loaded.model, rows, loaded.tokenizer.pad_token_id)
    assert rm.pair_metrics(c, r)["reward_mean"] == pytest.approx(m["reward_stats"]["mean"], abs=0.05)


def models_fmt():
    from medtune.data import templates

    return templates.resolve_format(tiny_tokenizer())


def test_reward_is_read_at_the_last_real_token_whatever_the_padding():
    tok = tiny_tokenizer()
    model = tiny_llama(tok)
    models.add_reward_head(model, seed=0)
    a = tok("The patient has a fever.<|im_end|>")["input_ids"]
    b = tok("Rest.<|im_end|>")["input_ids"]
    alone = [models.sequence_rewards(model, torch.tensor([s]), torch.ones(1, len(s), dtype=torch.long)).item()
             for s in (a, b)]
    width = max(len(a), len(b))
    ids = [s + [tok.pad_token_id] * (width - len(s)) for s in (a, b)]
    mask = [[1] * len(s) + [0] * (width - len(s)) for s in (a, b)]
    got = models.sequence_rewards(model, torch.tensor(ids), torch.tensor(mask)).tolist()
    assert got == pytest.approx(alone, abs=1e-5)
    # the head looks at the last token: changing an earlier token changes the reward, appending pad does not
    padded = models.sequence_rewards(model, torch.tensor([a + [tok.pad_token_id] * 3]),
                                     torch.tensor([[1] * len(a) + [0] * 3]))
    assert padded.item() == pytest.approx(alone[0], abs=1e-5)


def test_pair_loss_margin_and_centering():
    c, r = torch.tensor([1.0, 0.5]), torch.tensor([0.0, 0.4])
    plain = rm.pair_loss(c, r)
    assert float(plain) == pytest.approx(float(-torch.nn.functional.logsigmoid(c - r).mean()))
    assert float(rm.pair_loss(c, r, margin=1.0)) > float(plain)  # a required margin makes the same pairs cost more
    shifted = c + 5, r + 5  # same differences, far from zero
    assert float(rm.pair_loss(*shifted, centering=0.01)) > float(rm.pair_loss(c, r, centering=0.01))
    assert float(rm.pair_loss(*shifted)) == pytest.approx(float(plain))


def test_resume_restores_the_head_and_continues(tiny_model, tmp_path):
    from transformers import TrainerCallback

    data = write_pairs(tmp_path / "pairs.jsonl", n=40)
    common = ["train.max_steps=6", "train.save_steps=3", "data.val_size=8", "train.learning_rate=1e-3",
              "train.keep_checkpoints=true"]
    straight = rm.run(config(tiny_model, data, tmp_path / "a", *common))

    class Crash(TrainerCallback):
        def on_save(self, args, state, control, **kw):
            if state.global_step == 3:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        rm.run(config(tiny_model, data, tmp_path / "b", *common), callbacks=[Crash()])
    assert json.loads((tmp_path / "b" / "medtune.json").read_text())["status"] == "failed"
    resumed = rm.run(config(tiny_model, data, tmp_path / "b", *common, "resume=true"))
    ma, mb = (json.loads((p / "medtune.json").read_text()) for p in (straight, resumed))
    assert mb["metrics"]["steps"] == 6 and mb["history"][0]["step"] == 1  # history kept from before the crash
    assert mb["metrics"]["eval_margin"] == pytest.approx(ma["metrics"]["eval_margin"], abs=1e-4)
    assert mb["reward_stats"]["mean"] == pytest.approx(ma["reward_stats"]["mean"], abs=1e-4)


def test_rm_cli_scores_a_dialogue_file_and_refuses_a_run_without_a_head(tiny_model, tmp_path, capsys):
    from medtune.cli import main

    data = write_pairs(tmp_path / "pairs.jsonl", n=24)
    out = rm.run(config(tiny_model, data, tmp_path / "rm", "train.max_steps=2", "data.val_size=4"))
    dialogues = tmp_path / "d.jsonl"
    dialogues.write_text(json.dumps({"messages": [{"role": "user", "content": "Fever?"},
                                                  {"role": "assistant", "content": "Rest."}]}) + "\n")
    assert main(["rm", "score", str(out), str(dialogues), "-o", str(tmp_path / "scores.jsonl")]) == 0
    rows = [json.loads(x) for x in (tmp_path / "scores.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and isinstance(rows[0]["reward"], float)
    assert main(["rm", "score", str(tiny_model), str(dialogues)]) == 2
    assert "not a reward model run" in capsys.readouterr().err


def _renders_default(tokenizer, fmt) -> bool:
    """True when a prompt without a system message is rendered with SmolLM2's default system prompt."""
    prompt_ids, _ = preference.encode_pair(tokenizer, fmt, [{"role": "user", "content": "Fever?"}], "Rest.")
    return "named SmolLM" in tokenizer.decode(prompt_ids)


@pytest.mark.parametrize("system_prompt", [None, ""])
def test_system_prompt_empty_means_none_even_when_the_template_has_a_default(tmp_path, capsys, system_prompt):
    """rm's `data.system_prompt: ""` was documented as none, yet SmolLM2's template added its default system
    prompt to every pair (issue 15 item 9). Unset keeps the template's own; "" takes the default out."""
    from medtune.data import templates
    from test_sft import SMOLLM2_TEMPLATE

    model = save_tiny(tmp_path / "smol", tiny_tokenizer(SMOLLM2_TEMPLATE), hidden=32, seed=SEED)
    data = write_pairs(tmp_path / "pairs.jsonl", n=8)
    extra = [] if system_prompt is None else ["data.system_prompt="]
    out = rm.run(config(model, data, tmp_path / "rm", "train.max_steps=1", "data.val_size=0", *extra))
    manifest = json.loads((out / "medtune.json").read_text())
    tok = models.load_tokenizer(str(out))
    fmt = templates.resolve_format(tok, manifest["model"]["template"])  # what ppo/grpo score with
    if system_prompt == "":
        assert not _renders_default(tok, fmt) and manifest["default_system_prompt"] is None
        assert "taken out of the run's template" in capsys.readouterr().out
    else:
        assert _renders_default(tok, fmt) and "named SmolLM" in manifest["default_system_prompt"]
