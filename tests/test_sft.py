"""The SFT stage end to end on a tiny in-process model: it learns, masks, resumes and refuses bad input."""

import json

import pytest
import torch
from safetensors.torch import load_file

from medtune import runs
from medtune.config import load_config
from medtune.data import templates
from medtune.errors import DataError, MedtuneError
from medtune.stages import sft
from margins import SEED, above, below, lr, train_seed
from tiny import save_tiny, tiny_tokenizer

QA = [("I have a fever.", "Rest, drink water, see a doctor."), ("My chest hurts.", "Call an ambulance now."),
      ("患者咳嗽", "建议休息并就医。"), ("Thirst and urination?", "Test HbA1c for diabetes.")]


def write_data(path, n=32):
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            q, a = QA[i % len(QA)]
            msgs = [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
            if i % 4 == 3:  # multi-turn
                msgs += [{"role": "user", "content": "Anything else?"}, {"role": "assistant", "content": "No."}]
            f.write(json.dumps({"messages": msgs}, ensure_ascii=False) + "\n")
    return path


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("m") / "tiny", hidden=64, seed=SEED)


def config(tiny_model, data, out, *extra):
    return load_config(sft.SFTConfig, None, [
        f"model.name_or_path={tiny_model}", f"data.path={data}", f"output_dir={out}",
        "train.batch_size=2", "train.learning_rate=2e-2", "train.logging_steps=1", "train.bf16=false",
        "lora.r=8", *extra,
    ])


def test_encode_examples_masks_all_but_assistant_turns():
    tok = tiny_tokenizer()
    fmt = templates.resolve_format(tok)
    stats = dict.fromkeys(["dropped_too_long", "truncated_to_whole_turns", "dropped_no_target"], 0)
    dialogue = {"messages": [{"role": "user", "content": "a b"}, {"role": "assistant", "content": "yes"},
                             {"role": "user", "content": "c"}, {"role": "assistant", "content": "no"}], "source": "x:1"}
    (ex,) = sft.encode_examples([dialogue], tok, fmt, sft.DataConfig(max_length=512), stats)
    trained = tok.decode([t for t in ex["labels"] if t != -100])
    assert trained == "yes<|im_end|>no<|im_end|>"
    # truncation: drop by default, or keep whole leading turns; never an assistant turn without its end token
    short = sft.DataConfig(max_length=len(ex["input_ids"]) - 3)
    assert sft.encode_examples([dialogue], tok, fmt, short, stats) == [] and stats["dropped_too_long"] == 1
    short.truncation = "turns"
    (cut,) = sft.encode_examples([dialogue], tok, fmt, short, stats)
    assert tok.decode([t for t in cut["labels"] if t != -100]) == "yes<|im_end|>"
    assert stats["truncated_to_whole_turns"] == 1


def test_sft_lora_learns_and_writes_a_self_describing_run(tiny_model, tmp_path):
    data = write_data(tmp_path / "d.jsonl")
    out = sft.run(config(tiny_model, data, tmp_path / "run", "train.max_steps=30", "data.val_size=4",
                         "train.eval_steps=30", f"train.learning_rate={lr(2e-2)}", f"train.seed={train_seed()}"))
    manifest = runs.read_manifest(out)
    assert manifest["status"] == "completed" and manifest["adapter"] and manifest["packing"]
    assert manifest["data"][0]["sha256"] and manifest["data"][0]["records"] == 32
    assert manifest["libraries"]["transformers"]
    losses = [h["loss"] for h in manifest["history"] if "loss" in h]
    below("last / first training loss", losses[-1] / losses[0], 0.5, losses)  # it learns
    below("eval_loss / eval_loss_before", manifest["metrics"]["eval_loss"] / manifest["metrics"]["eval_loss_before"],
          1.0, manifest["metrics"])
    # a PEFT folder: LoRA B matrices start at zero and must have moved
    weights = load_file(out / "adapter_model.safetensors")
    assert any(k.endswith("lora_B.weight") and v.abs().sum() > 0 for k, v in weights.items())
    assert not (out / "checkpoints").exists()  # removed after success unless keep_checkpoints
    assert list((out / "logs").rglob("events.out.tfevents.*"))
    # later commands need only the folder: load it and generate; it learned to stop
    from medtune import chat

    cm = chat.load_chat_model(str(out))
    text, stopped = chat.generate(cm, [{"role": "user", "content": "My chest hurts."}],
                                  chat.GenerationSettings(temperature=0, max_new_tokens=20, repetition_penalty=1.0))
    assert stopped and "ambulance" in text


def test_full_finetune_saves_loadable_weights(tiny_model, tmp_path):
    from transformers import AutoModelForCausalLM

    data = write_data(tmp_path / "d.jsonl", n=8)
    out = sft.run(config(tiny_model, data, tmp_path / "full", "lora.method=full", "train.max_steps=3"))
    assert not runs.read_manifest(out)["adapter"]
    tuned = AutoModelForCausalLM.from_pretrained(out)
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    assert not torch.equal(tuned.model.layers[0].mlp.down_proj.weight, base.model.layers[0].mlp.down_proj.weight)


class _Crash(Exception):
    pass


def _crash_after_checkpoint(step):
    from transformers import TrainerCallback

    class Crash(TrainerCallback):
        def on_save(self, args, state, control, **kw):
            if state.global_step == step:
                raise _Crash()

    return Crash()


def test_resume_continues_at_the_same_step_with_the_same_data_order(tiny_model, tmp_path):
    data = write_data(tmp_path / "d.jsonl")
    common = ["train.max_steps=8", "train.save_steps=4", "lora.dropout=0.1"]
    straight = sft.run(config(tiny_model, data, tmp_path / "a", *common))
    with pytest.raises(_Crash):
        sft.run(config(tiny_model, data, tmp_path / "b", *common), callbacks=[_crash_after_checkpoint(4)])
    assert runs.read_manifest(tmp_path / "b")["status"] == "failed"
    assert runs.last_checkpoint(tmp_path / "b").name == "checkpoint-4"
    with pytest.raises(MedtuneError, match="unfinished run"):
        sft.run(config(tiny_model, data, tmp_path / "b", *common))
    resumed = sft.run(config(tiny_model, data, tmp_path / "b", *common, "resume=true"))
    h_a = {h["step"]: h["loss"] for h in runs.read_manifest(straight)["history"] if "loss" in h}
    h_b = {h["step"]: h["loss"] for h in runs.read_manifest(resumed)["history"] if "loss" in h}
    assert min(k for k in h_b if k > 4) == 5  # it continued at step 5, not from the start
    for step in range(5, 9):
        assert h_b[step] == pytest.approx(h_a[step], rel=1e-4), step
    # train_loss is the mean over all 8 steps, not over the 4 after the resume
    loss_a, loss_b = (runs.read_manifest(p)["metrics"]["train_loss"] for p in (straight, resumed))
    assert loss_b == pytest.approx(loss_a, rel=1e-4)
    wa, wb = load_file(straight / "adapter_model.safetensors"), load_file(resumed / "adapter_model.safetensors")
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=1e-5, rtol=1e-4)


def test_bad_data_fails_before_training_and_never_damages_a_finished_run(tiny_model, tmp_path):
    data = write_data(tmp_path / "d.jsonl", n=4)
    out = sft.run(config(tiny_model, data, tmp_path / "run", "train.max_steps=1"))
    before = (out / "adapter_model.safetensors").read_bytes()
    with pytest.raises(MedtuneError, match="completed run"):
        sft.run(config(tiny_model, data, out, "train.max_steps=1"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(data.read_text() + '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": " "}]}\n')
    with pytest.raises(DataError) as e:
        sft.run(config(tiny_model, bad, tmp_path / "run2", "train.max_steps=1"))
    assert "bad.jsonl:5" in str(e.value) and "messages[1].content" in str(e.value)
    assert not (tmp_path / "run2" / "adapter_model.safetensors").exists()
    assert (out / "adapter_model.safetensors").read_bytes() == before


def test_a_lora_run_chains_into_the_next_stage(tiny_model, tmp_path):
    data = write_data(tmp_path / "d.jsonl", n=8)
    first = sft.run(config(tiny_model, data, tmp_path / "one", "train.max_steps=2"))
    second = sft.run(config(first, data, tmp_path / "two", "train.max_steps=2"))
    m = runs.read_manifest(second)
    assert m["model"]["weights"] == str(first.resolve()) and m["model"]["base"] == str(tiny_model.resolve())
    from medtune import models

    loaded = models.load(models.ModelConfig(name_or_path=str(second)))
    assert loaded.chain == [str(first.resolve()), str(second.resolve())]


def test_label_only_logits_loss_equals_the_models_own_loss():
    from medtune.data import packing

    tok = tiny_tokenizer()
    from tiny import tiny_llama

    model = tiny_llama(tok)
    examples = [{"input_ids": list(range(10, 30)), "labels": [-100] * 12 + list(range(22, 30))},
                {"input_ids": list(range(40, 52)), "labels": [-100] * 5 + list(range(45, 52))}]
    collator = packing.Collator(tok.pad_token_id)
    batch = collator(packing.pack(examples, 64) + packing.unpacked(examples[:1]))
    with torch.no_grad():
        ours = sft.label_logits_loss(model, batch)
        theirs = model(**batch, use_cache=False).loss
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    assert sft.label_logits_supported(model, collator)

    # a model that post-processes its logits (here: scaled, as Cohere's logit_scale does) keeps the ordinary path
    forward = model.forward

    def scaled_forward(*args, labels=None, **kwargs):
        out = forward(*args, **kwargs)
        out.logits = out.logits * 2.0
        out.loss = model.loss_function(out.logits, labels, vocab_size=model.config.vocab_size)
        return out

    model.forward = scaled_forward
    assert not sft.label_logits_supported(model, collator)


def test_sft_mixes_sources_and_reports_the_achieved_mixture(tiny_model, tmp_path, capsys):
    def write(path, n, question, answer):
        path.write_text("".join(json.dumps({"messages": [{"role": "user", "content": question.format(i)},
                                                        {"role": "assistant", "content": answer.format(i)}]}) + "\n"
                                for i in range(n)))
        return path

    med = write(tmp_path / "med.jsonl", 24, "Fever for {} days?", "See a doctor if it lasts {} days.")
    gen = write(tmp_path / "gen.jsonl", 100, "Say {}.", "{}.")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(json.dumps({"data": {"sources": [{"path": str(med), "weight": 0.8, "name": "medical"},
                                                       {"path": str(gen), "weight": 0.2, "name": "general"}],
                                           "val_size": 3}}))
    cfg = load_config(sft.SFTConfig, recipe, [f"model.name_or_path={tiny_model}", f"output_dir={tmp_path / 'run'}",
                                              "train.max_steps=1", "train.bf16=false"])
    m = runs.read_manifest(sft.run(cfg))
    mix = {r["name"]: r for r in m["data_stats"]["mixture"]["sources"]}
    assert mix["medical"]["examples"] + mix["general"]["examples"] == 24 + 6 - 3  # all 24 medical, 6 general, 3 held out
    assert mix["general"]["share_examples"] == pytest.approx(0.2, abs=0.05)
    assert m["data_stats"]["val_examples"] == 3
    assert "mixture achieved" in capsys.readouterr().out
    with pytest.raises(MedtuneError, match="not both"):
        sft.run(load_config(sft.SFTConfig, recipe, [f"data.path={med}", f"output_dir={tmp_path / 'x'}"]))


@pytest.mark.parametrize("warmup", ["0.03", "5"])
def test_a_one_step_run_trains_despite_warmup(tiny_model, tmp_path, capsys, warmup):
    """Warm-up of one step or more over a one-step run left the rate at 0 and LoRA B at zero, "completed"."""
    data = write_data(tmp_path / "d.jsonl", n=8)
    out = sft.run(config(tiny_model, data, tmp_path / "one", "train.max_steps=1", f"train.warmup={warmup}"))
    weights = load_file(out / "adapter_model.safetensors")
    assert any(k.endswith("lora_B.weight") and v.abs().sum() > 0 for k, v in weights.items())
    assert "train.warmup" in capsys.readouterr().out
    rates = [h["learning_rate"] for h in runs.read_manifest(out)["history"] if "learning_rate" in h]
    assert rates and rates[0] > 0


SMOLLM2_TEMPLATE = (  # SmolLM2-Instruct's own template: a default system prompt when a dialogue has none
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\n"
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


@pytest.mark.parametrize("system_prompt,expect", [(None, "named SmolLM"), ("", None), ("Be brief.", "Be brief.")])
def test_system_prompt_empty_turns_the_templates_default_off(tmp_path, capsys, system_prompt, expect):
    """docs said `system_prompt: ""` means none, yet SmolLM2's template inserted its own default prompt."""
    from medtune import models

    model = save_tiny(tmp_path / "smol", tiny_tokenizer(SMOLLM2_TEMPLATE), hidden=64, seed=SEED)
    data = write_data(tmp_path / "d.jsonl", n=8)
    extra = [] if system_prompt is None else [f"data.system_prompt={system_prompt!r}" if system_prompt else "data.system_prompt="]
    out = sft.run(config(model, data, tmp_path / "run", "train.max_steps=1", "data.packing=false", *extra))
    manifest = runs.read_manifest(out)
    tok = models.load_tokenizer(str(out))
    fmt = templates.resolve_format(tok)
    enc = templates.encode_dialogue(tok, fmt, [{"role": "user", "content": "hi"}], add_generation_prompt=True)
    text = tok.decode(enc.input_ids)
    if expect is None:
        assert "system" not in text and manifest["default_system_prompt"] is None
        assert "taken out of the run's template" in capsys.readouterr().out
    elif system_prompt is None:  # the template's own: what the run says it trained with
        assert expect in text and manifest["default_system_prompt"] == templates.default_system_prompt(tok, fmt)
    else:
        assert manifest["default_system_prompt"] == expect and "named SmolLM" in text  # chat passes --system itself


def test_a_private_use_character_trains_as_data_validate_accepts_it(tiny_model, tmp_path):
    """data validate accepted U+E000 and sft refused it (medtune used it to mark turns): they agree now."""
    from medtune.data import formats

    data = tmp_path / "pua.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "a \ue000\ue001 b \ue0000\ue001"},
                                             {"role": "assistant", "content": "ok \ue002"}]}) + "\n")
    assert formats.validate_file(data)["records"] == 1
    out = sft.run(config(tiny_model, data, tmp_path / "run", "train.max_steps=1"))
    assert runs.read_manifest(out)["status"] == "completed"
    tok = tiny_tokenizer()
    enc = templates.encode_dialogue(tok, templates.resolve_format(tok), [
        {"role": "user", "content": "x \ue0000\ue001"}, {"role": "assistant", "content": "y"}])
    assert "x \ue0000\ue001" in tok.decode(enc.input_ids)


class _FirstStep(Exception):
    pass


def _fail_in_first_step(exc):
    from transformers import TrainerCallback

    class Fail(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            raise exc

    return Fail()


def test_overwrite_replaces_a_completed_run_only_when_the_new_one_completes(tiny_model, tmp_path):
    """overwrite=true with bad LoRA targets emptied the completed run: the folder was cleared before LoRA."""
    data = write_data(tmp_path / "d.jsonl", n=8)
    out = sft.run(config(tiny_model, data, tmp_path / "run", "train.max_steps=1"))
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    failures = [
        ((["overwrite=true", "lora.target_modules=nonexistent_proj"], None), MedtuneError),
        ((["overwrite=true"], _fail_in_first_step(_FirstStep())), _FirstStep),
        ((["overwrite=true"], _fail_in_first_step(KeyboardInterrupt())), KeyboardInterrupt),  # Ctrl-C
    ]
    for (extra, callback), error in failures:
        with pytest.raises(error):
            sft.run(config(tiny_model, data, tmp_path / "run", "train.max_steps=1", *extra),
                    callbacks=[callback] if callback else None)
        assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before, extra
        assert sorted(p.name for p in tmp_path.iterdir()) == ["d.jsonl", "run"]  # nothing left aside
    # a new folder: a run that fails before it has a manifest leaves no empty folder behind
    with pytest.raises(MedtuneError, match="target_modules"):
        sft.run(config(tiny_model, data, tmp_path / "new", "train.max_steps=1", "lora.target_modules=nonexistent_proj"))
    assert not (tmp_path / "new").exists()
    # and a successful overwrite replaces it, leaving nothing aside
    sft.run(config(tiny_model, data, tmp_path / "run", "train.max_steps=2", "overwrite=true"))
    assert runs.read_manifest(out)["metrics"]["steps"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.jsonl", "run"]


def test_a_killed_overwrite_keeps_the_replaced_run_aside_until_the_new_one_completes(tiny_model, tmp_path):
    data = write_data(tmp_path / "d.jsonl", n=8)
    out = sft.run(config(tiny_model, data, tmp_path / "run", "train.max_steps=1"))
    finished = runs.read_manifest(out)["finished"]
    aside = runs.aside_folder(out)
    runs.prepare(out, resume=False, overwrite=True)  # what a run killed with SIGKILL right after leaves
    (out / runs.MANIFEST).write_text(json.dumps({"stage": "sft", "status": "running"}))
    assert runs.read_manifest(aside)["finished"] == finished
    runs._SET_ASIDE.clear()  # a new process
    with pytest.raises(MedtuneError, match="target_modules"):  # overwrite again, and fail: the completed run returns
        sft.run(config(tiny_model, data, out, "train.max_steps=1", "overwrite=true", "lora.target_modules=nope"))
    assert runs.read_manifest(out)["finished"] == finished and not aside.exists()


# ------------------------------------------------------------------------------------ kill -9 at any moment

KILL_SEEDS = (1, 2, 3, 4, 5)


def _tensorboard_points(log_dir, tag="train/loss"):
    """(step, value) of every `tag` scalar in every event file under `log_dir`, as written (no purging)."""
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader

    points = []
    for path in sorted(log_dir.rglob("events.out.tfevents.*")):
        for event in LegacyEventFileLoader(str(path)).Load():
            points += [(event.step, v.simple_value) for v in event.summary.value if v.tag == tag]
    return points


def _kill_run_settings(tiny_model, data, out):
    return [f"model.name_or_path={tiny_model}", f"data.path={data}", f"output_dir={out}", "train.batch_size=2",
            "train.learning_rate=2e-2", "train.logging_steps=1", "train.bf16=false", "lora.r=8", "lora.dropout=0.1",
            "train.max_steps=12", "train.save_steps=3", "data.packing=false", "resume=true"]


def _sft_command(tiny_model, data, out):
    import sys

    return [sys.executable, "-m", "medtune", "sft", *_kill_run_settings(tiny_model, data, out)]


def _run_until(command, out, delay):
    """Start `command`; once its run folder has a manifest (training begins), wait `delay` seconds and kill -9.
    Returns (what the kill hit, or 'finished' when the run completed first; seconds from the manifest to the end)."""
    import os
    import signal
    import subprocess
    import time

    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        while proc.poll() is None and not (out / "medtune.json").exists():
            time.sleep(0.01)
        began = time.monotonic()
        while proc.poll() is None and time.monotonic() - began < delay:
            time.sleep(0.005)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        span = time.monotonic() - began
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    manifest = runs.read_manifest(out) or {}
    if manifest.get("status") == "completed":
        return "finished", span
    torn = [p.name for p in (out / "checkpoints").glob("checkpoint-*") if not (p / "trainer_state.json").exists()]
    return f"killed after {span:.2f} s, at {'a checkpoint write' if torn else 'a step or the final save'}", span


@pytest.mark.slow
def test_kill_at_a_random_moment_then_resume_ends_with_the_uninterrupted_weights(tiny_model, tmp_path):
    """kill -9 at random moments (a step, a checkpoint write, the final save), over several seeds, then
    resume=true: the run ends with the weights of a run never interrupted, its train_loss covers every step, and
    TensorBoard holds one point per logged step (issue 15 item 5)."""
    import random

    data = write_data(tmp_path / "d.jsonl", n=32)
    straight = tmp_path / "straight"
    finished, span = _run_until(_sft_command(tiny_model, data, straight), straight, delay=float("inf"))
    assert finished == "finished"  # span: from the first manifest (data and model ready) to the end of the run
    reference = load_file(straight / "adapter_model.safetensors")
    loss = runs.read_manifest(straight)["metrics"]["train_loss"]
    hits = []
    for seed in KILL_SEEDS:
        out = tmp_path / f"killed-{seed}"
        hits.append(_run_until(_sft_command(tiny_model, data, out), out, random.Random(seed).uniform(0, 0.9 * span))[0])
        if hits[-1] != "finished":  # the same command again (resume=true), in this process: no second start-up
            sft.run(load_config(sft.SFTConfig, None, _kill_run_settings(tiny_model, data, out)))
        manifest = runs.read_manifest(out)
        assert manifest["status"] == "completed" and manifest["metrics"]["steps"] == 12, hits[-1]
        assert manifest["metrics"]["train_loss"] == pytest.approx(loss, rel=1e-4), hits[-1]
        resumed = load_file(out / "adapter_model.safetensors")
        for k in reference:
            torch.testing.assert_close(resumed[k], reference[k], atol=1e-5, rtol=1e-4, msg=lambda m: f"{hits[-1]}: {m}")
        steps = [s for s, _ in _tensorboard_points(out / "logs")]
        assert sorted(steps) == list(range(1, 13)), hits[-1]  # one curve: no step logged twice
    print("kills:", hits)


def test_a_checkpoint_cut_off_while_its_trainer_state_was_written_is_skipped_for_the_one_before(tiny_model, tmp_path, capsys):
    """kill -9 in the instant trainer_state.json (written last) was being written left a checkpoint that looks
    complete; resuming from it ended in a JSON traceback (then a refusal). It is skipped, named in one line, and
    the run resumes from the checkpoint before it."""
    from medtune.cli import main

    data = write_data(tmp_path / "d.jsonl", n=8)
    common = ["train.max_steps=4", "train.save_steps=1"]
    with pytest.raises(_Crash):
        sft.run(config(tiny_model, data, tmp_path / "b", *common), callbacks=[_crash_after_checkpoint(2)])
    state = tmp_path / "b" / "checkpoints" / "checkpoint-2" / "trainer_state.json"
    state.write_text(state.read_text()[:40])
    args = [f"model.name_or_path={tiny_model}", f"data.path={data}", f"output_dir={tmp_path / 'b'}", *common,
            "train.batch_size=2", "train.bf16=false", "lora.r=8", "resume=true"]
    assert main(["sft", *args]) == 0
    said = capsys.readouterr().out
    assert f"{state.parent} is incomplete (its trainer_state.json does not parse" in said
    assert f"resuming from {state.parent.parent / 'checkpoint-1'} (step 1)" in said
    manifest = runs.read_manifest(tmp_path / "b")
    assert manifest["status"] == "completed" and manifest["metrics"]["steps"] == 4
