"""GRPO and RLOO: the rewards read answers as documented; on a tiny model a learnable rule reward rises while
the KL from the reference stays bounded; runs chain from SFT, resume, score with an RM run, and bad input
stops before any model loads."""

import json

import pytest
import torch

from medtune.config import load_config
from medtune.errors import ConfigError, DataError, MedtuneError
from medtune.stages import grpo, rm, sft
from margins import SEED, above, below, lr, train_seed
from test_rm import config as rm_config
from test_rm import write_pairs
from tiny import save_tiny

QUESTIONS = ["I have a fever.", "My chest hurts.", "I cough at night.", "My head aches.", "I feel thirsty.",
             "My back hurts.", "I cannot sleep.", "I feel dizzy."]


def keyword_said_sometimes(model_dir, share=0.12, answers_per_question=12):
    """A word (one token of the tiny tokenizer) that the untrained model puts in about `share` of its sampled
    16-token answers: groups of 8 then disagree, so GRPO has something to learn. Chosen per model, since each
    seed's random weights favour different tokens (a fixed word is never said under most seeds)."""
    import re

    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    torch.manual_seed(SEED)
    answers = []
    for q in QUESTIONS:
        ids = tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                      return_tensors="pt", return_dict=True)
        out = model.generate(**ids, do_sample=True, temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=16,
                             num_return_sequences=answers_per_question, pad_token_id=tok.pad_token_id)
        answers += tok.batch_decode(out[:, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    tokens = {tok.decode([i]).strip().lower() for i in range(len(tok))}
    words = {w for a in answers for w in re.findall(r"[a-z]{3,}", a.lower()) if w in tokens}
    said = {w: sum(grpo.keyword_score(a, [w]) for a in answers) / len(answers) for w in words}
    return min(sorted(said), key=lambda w: abs(said[w] - share))


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run many times faster on one thread than on two contended ones."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("m") / "tiny", hidden=64, seed=SEED)


@pytest.fixture(scope="module")
def prompts(tmp_path_factory, tiny_model):
    path = tmp_path_factory.mktemp("d") / "prompts.jsonl"
    keyword = keyword_said_sometimes(tiny_model)
    path.write_text("".join(json.dumps({"prompt": QUESTIONS[i % 8], "keywords": [keyword]}) + "\n" for i in range(32)))
    return path


def config(model, data, out, *extra):
    return load_config(grpo.GRPOConfig, None, [
        f"model.name_or_path={model}", f"data.path={data}", f"output_dir={out}", "rewards=[keyword]",
        "num_generations=8", "train.batch_size=16", "max_new_tokens=16", "train.learning_rate=6e-3",
        "train.logging_steps=1", "train.save_steps=1000", *extra])


def rewards_of(run_dir):
    m = json.loads((run_dir / "medtune.json").read_text())
    steps = [h for h in m["history"] if "reward" in h]
    return m, [h["reward"] for h in steps], [h.get("kl", 0.0) for h in steps]


def mean(xs):
    return sum(xs) / len(xs)


# ------------------------------------------------------------------------------------------ rewards


def test_mcq_reward_reads_english_chinese_and_option_text_answers():
    labels, options = list("ABCD"), ["Insulin", "Aspirin", "Metformin", "Warfarin"]
    mcq = grpo.Reward("mcq")
    right = ["The answer is C", "C. Metformin", "答案：C", "Metformin", "Answer: (C)"]
    wrong = ["The answer is B", "B. Aspirin", "答案：D", "I am not sure.", "", "A or C"]
    texts = right + wrong
    got = mcq(prompts=[[{"role": "user", "content": "q"}]] * len(texts),
              completions=[[{"role": "assistant", "content": t}] for t in texts],
              answer=["C"] * len(texts), option_labels=[labels] * len(texts), options=[options] * len(texts))
    assert got == [1.0] * len(right) + [0.0] * len(wrong)
    # plain-text completions (a non-conversational prompt) read the same
    assert grpo.Reward("mcq")(prompts=["q"], completions=["答案：C"], answer=["C"], option_labels=[labels],
                              options=[options]) == [1.0]
    # PubMedQA labels
    assert grpo.mcq_score("Answer: maybe", "maybe", ["yes", "no", "maybe"], ["yes", "no", "maybe"]) == 1.0
    assert grpo.mcq_score("No.", "maybe", ["yes", "no", "maybe"], ["yes", "no", "maybe"]) == 0.0


def test_format_and_keyword_rewards_are_exact():
    labels = list("ABCD")
    good = ["Answer: C", "answer:(C)", "答案：C", "答案: B. 二甲双胍", "Answer: C. Metformin\nAnswer: C"]
    bad = ["The answer is C", "C", "Answer: Cough", "Answer: E", "Answer: C. Answer: D", ""]
    assert [grpo.format_score(t, labels) for t in good] == [1.0] * len(good)
    assert [grpo.format_score(t, labels) for t in bad] == [0.0] * len(bad)
    assert grpo.format_score("Answer: yes", ["yes", "no", "maybe"]) == 1.0
    kw = grpo.Reward("keyword")
    assert kw(prompts=["q"] * 3, completions=["Call an AMBULANCE.", "rest", "急救"],
              keywords=[["ambulance", "急救"]] * 3) == [1.0, 0.0, 1.0]


def test_mcq_prompts_from_the_demo_exam_show_the_options_and_ask_for_the_letter(tmp_path):
    cfg = load_config(grpo.GRPOConfig, None, ["data.task=mcq", f"output_dir={tmp_path / 'r'}"])
    rows, fingerprints = grpo.read_prompts(cfg)
    assert len(rows) == 50 and fingerprints[0]["path"].endswith("demo/exam.jsonl")
    zh, en = rows[0], rows[2]  # the exam's first line is Chinese (answer B), the third English (answer B)
    assert zh["answer"] == "B" and zh["option_labels"] == list("ABCD")
    assert zh["options"][1] == "糖化血红蛋白（HbA1c）检测"
    text = zh["prompt"][0]["content"]
    assert "B. 糖化血红蛋白（HbA1c）检测" in text and "答案：X" in text
    assert "B. nose or throat swab test for influenza" in en["prompt"][0]["content"]
    assert 'as "Answer: X"' in en["prompt"][0]["content"]
    # the gold answer as its SFT conversion writes it scores 1 on both rewards
    for row in rows:
        gold = f"Answer: {row['answer']}. {row['options'][row['option_labels'].index(row['answer'])]}"
        assert grpo.mcq_score(gold, row["answer"], row["option_labels"], row["options"]) == 1.0
        assert grpo.format_score(gold, row["option_labels"]) == 1.0


# ------------------------------------------------------------------------------------------ learning


def test_grpo_raises_a_rule_reward_while_the_kl_stays_bounded(tiny_model, prompts, tmp_path):
    out = grpo.run(config(tiny_model, prompts, tmp_path / "grpo", "beta=0.1", "train.max_steps=60",
                          f"train.learning_rate={lr(6e-3)}", f"train.seed={train_seed()}"))
    m, rewards, kls = rewards_of(out)
    assert m["stage"] == "grpo" and m["status"] == "completed" and m["adapter"] and m["advantage"] == "grpo"
    assert len(rewards) == 60
    # seed margins in docs/testing.md
    below("reward, first 10 steps", mean(rewards[:10]), 0.3, rewards)
    above("reward gain, last 10 steps over first 10", mean(rewards[-10:]) - mean(rewards[:10]), 0.35, rewards)
    assert mean(kls[-10:]) > 0, kls
    below("kl, mean of last 10 steps", mean(kls[-10:]), 2.0, kls)
    below("kl, peak", max(kls), 4.0, kls)
    assert m["metrics"]["reward_last"] == rewards[-1] and "kl_last" in m["metrics"]
    assert {"entropy", "completions/mean_length", "rewards/keyword/mean"} <= set(m["history"][-1])


def test_rloo_raises_the_reward_too(tiny_model, prompts, tmp_path):
    # RLOO subtracts beta * (summed per-token log-ratio) from each answer's reward: a small beta
    out = grpo.run(config(tiny_model, prompts, tmp_path / "rloo", "advantage=rloo", "beta=0.02", "train.max_steps=40",
                          f"train.learning_rate={lr(6e-3)}", f"train.seed={train_seed()}"))
    m, rewards, kls = rewards_of(out)
    assert m["advantage"] == "rloo"
    # seed margins in docs/testing.md; KL is the first-order estimate, per token
    below("reward, first 10 steps", mean(rewards[:10]), 0.3, rewards)
    above("reward gain, last 10 steps over first 10", mean(rewards[-10:]) - mean(rewards[:10]), 0.35, rewards)
    below("kl, mean of last 10 steps", mean(kls[-10:]), 2.5, kls)


# ------------------------------------------------------------------------------------------ runs


def test_grpo_chains_from_an_sft_run_on_the_demo_exam(tiny_model, tmp_path):
    from medtune import models

    sft_data = tmp_path / "sft.jsonl"
    sft_data.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"Question {i}?"},
                                                         {"role": "assistant", "content": "Answer: B"}]}) + "\n"
                                for i in range(16)))
    sft_run = sft.run(load_config(sft.SFTConfig, None, [f"model.name_or_path={tiny_model}", f"data.path={sft_data}",
                                                        f"output_dir={tmp_path / 'sft'}", "train.max_steps=4",
                                                        "train.learning_rate=5e-3"]))
    out = grpo.run(load_config(grpo.GRPOConfig, None, [
        f"model.name_or_path={sft_run}", "data.task=mcq", "data.max_samples=8", f"output_dir={tmp_path / 'grpo'}",
        "train.max_steps=2", "train.batch_size=8", "max_new_tokens=8", "train.logging_steps=1"]))
    m = json.loads((out / "medtune.json").read_text())
    assert m["model"]["weights"] == str(sft_run.resolve()) and m["model"]["base"] == str(tiny_model.resolve())
    assert m["rewards"] == [{"name": "mcq", "weight": 1.0}, {"name": "format", "weight": 0.2}]
    assert m["data"][0]["path"].endswith("demo/exam.jsonl") and m["data"][0]["records"] == 8
    assert m["metrics"]["steps"] == 2 and "rewards/mcq/mean" in m["history"][0]
    assert models.load(models.ModelConfig(name_or_path=str(out))).chain == [str(sft_run.resolve()), str(out.resolve())]
    assert json.loads((out / "tokenizer_config.json").read_text()).get("padding_side", "right") == "right"


def test_resume_after_a_crash_reaches_the_same_step_and_rewards(tiny_model, prompts, tmp_path):
    from transformers import TrainerCallback

    common = ["train.max_steps=6", "train.save_steps=3", "train.batch_size=8", "num_generations=4"]
    straight = grpo.run(config(tiny_model, prompts, tmp_path / "a", *common))

    class Crash(TrainerCallback):
        def on_save(self, args, state, control, **kw):
            if state.global_step == 3:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        grpo.run(config(tiny_model, prompts, tmp_path / "b", *common), callbacks=[Crash()])
    assert json.loads((tmp_path / "b" / "medtune.json").read_text())["status"] == "failed"
    resumed = grpo.run(config(tiny_model, prompts, tmp_path / "b", *common, "resume=true"))
    (_, ra, _), (mb, rb, _) = rewards_of(straight), rewards_of(resumed)
    assert mb["metrics"]["steps"] == 6 and mb["status"] == "completed"
    assert rb[-3:] == pytest.approx(ra[-3:], abs=1e-6)  # the same answers were sampled after the restart


def test_rm_reward_scores_the_reward_models_chosen_answers_above_its_rejected(tiny_model, tmp_path):
    data = write_pairs(tmp_path / "pairs.jsonl", n=48, seed=SEED)
    rm_run = rm.run(rm_config(tiny_model, data, tmp_path / "rm", "data.val_size=8"))
    reward = grpo.RMReward(str(rm_run))
    pairs = [json.loads(x) for x in data.read_text().splitlines()][:16]
    prompts = [[{"role": "user", "content": p["prompt"]}] for p in pairs]
    chosen = reward(prompts=prompts, completions=[[{"role": "assistant", "content": p["chosen"]}] for p in pairs])
    rejected = reward(prompts=prompts, completions=[[{"role": "assistant", "content": p["rejected"]}] for p in pairs])
    above("pairs ranked right of 16", sum(c > r for c, r in zip(chosen, rejected)), 14)
    # normalised with the RM run's reward_stats: centred near 0
    above("mean normalised reward, chosen", mean(chosen), 0)
    below("mean normalised reward, rejected", mean(rejected), 0)
    # the same scores as `medtune rm score`, up to the normalisation
    raw = grpo.RMReward(str(rm_run), normalize=False)(prompts=prompts[:1], completions=[pairs[0]["chosen"]])
    assert raw[0] == pytest.approx(chosen[0] * reward.std + reward.mean, abs=1e-4)

    out = grpo.run(load_config(grpo.GRPOConfig, None, [
        f"model.name_or_path={tiny_model}", f"data.path={data}", f"output_dir={tmp_path / 'grpo'}", "rewards=[rm]",
        f"reward_model={rm_run}", "train.max_steps=2", "train.batch_size=8", "max_new_tokens=8"]))
    m = json.loads((out / "medtune.json").read_text())
    assert m["reward_model"]["run"] == str(rm_run.resolve()) and m["reward_model"]["normalize"]
    assert "rewards/rm/mean" in m["history"][0]


# ------------------------------------------------------------------------------------------ errors


def test_bad_input_stops_before_any_model_loads(tiny_model, prompts, tmp_path, monkeypatch):
    from medtune import models

    def no_load(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(models, "load", no_load)
    out = tmp_path / "r"
    no_prompt = tmp_path / "no_prompt.jsonl"
    no_prompt.write_text('{"prompt": "q?", "keywords": ["x"]}\n{"question": "q?", "keywords": ["x"]}\n')
    with pytest.raises(DataError, match=r"no_prompt.jsonl:2"):
        grpo.run(config(tiny_model, no_prompt, out))
    no_answer = tmp_path / "no_answer.jsonl"
    no_answer.write_text('{"prompt": "q?", "answer": "B"}\n{"prompt": "q?"}\n')
    with pytest.raises(DataError, match=r"no_answer.jsonl:2: field 'answer'"):
        grpo.run(config(tiny_model, no_answer, out, "rewards=[mcq]"))
    bad_letter = tmp_path / "bad_letter.jsonl"
    bad_letter.write_text('{"prompt": "q?", "answer": "C", "options": ["a", "b"]}\n')
    with pytest.raises(DataError, match=r"bad_letter.jsonl:1: field 'answer'"):
        grpo.run(config(tiny_model, bad_letter, out, "rewards=[mcq]"))
    with pytest.raises(ConfigError, match="rewards"):
        config(tiny_model, prompts, out, "rewards=[keyword,accuracy]")
    with pytest.raises(ConfigError, match="full fine-tuning"):
        grpo.run(config(tiny_model, prompts, out, "lora.method=full", "beta=0.04"))
    with pytest.raises(ConfigError, match="multiple of num_generations"):
        grpo.run(config(tiny_model, prompts, out, "train.batch_size=6"))
    with pytest.raises(ConfigError, match="reward_model"):
        grpo.run(config(tiny_model, prompts, out, "rewards=[rm]"))
    with pytest.raises(MedtuneError, match="not a reward model run"):
        grpo.run(config(tiny_model, prompts, out, "rewards=[rm]", f"reward_model={tiny_model}"))
    with pytest.raises(ConfigError, match="keyword reward needs prompt files"):
        grpo.run(load_config(grpo.GRPOConfig, None, ["data.task=mcq", "rewards=[keyword]", f"output_dir={out}"]))
    assert not out.exists()


def test_lora_reference_is_the_adapter_switched_off_and_answers_stop_at_the_end_of_turn(tiny_model, prompts, tmp_path):
    from peft import PeftModel

    from medtune import models
    from medtune.data import templates

    cfg = config(tiny_model, prompts, tmp_path / "x", "beta=0.1", "advantage=grpo")
    loaded = models.load(cfg.model)
    fmt = templates.resolve_format(loaded.tokenizer)
    loaded.model.generation_config.eos_token_id = templates.generation_stop_ids(loaded.tokenizer, fmt)
    rows, _ = grpo.read_prompts(cfg)
    funcs, weights = grpo.reward_functions(cfg, "cpu")
    trainer = grpo.trl_trainer(cfg, loaded.model, loaded.tokenizer, rows[:8], [], tmp_path / "x", funcs, weights, [])
    assert isinstance(trainer.model, PeftModel) and trainer.ref_model is None  # no second copy of the weights
    assert set(templates.generation_stop_ids(loaded.tokenizer, fmt)) <= set(trainer.eos_token_ids)
    assert trainer.reward_func_names == ["keyword"] and trainer.args.beta == 0.1


def test_full_fine_tuning_without_a_reference_runs(tiny_model, prompts, tmp_path):
    out = grpo.run(config(tiny_model, prompts, tmp_path / "full", "lora.method=full", "beta=0", "train.max_steps=2",
                          "train.learning_rate=1e-4", "train.batch_size=8", "num_generations=4"))
    m = json.loads((out / "medtune.json").read_text())
    assert not m["adapter"] and (out / "model.safetensors").is_file() and "kl" not in m["history"][0]


def test_cli_exit_code_2_on_bad_input(tiny_model, prompts, tmp_path):
    from medtune import cli

    if "grpo" not in cli.STAGES:
        pytest.skip("grpo is not registered in medtune.cli.STAGES yet")
    assert cli.main(["grpo", f"model.name_or_path={tiny_model}", f"data.path={prompts}", "rewards=[keyword]",
                     "lora.method=full", f"output_dir={tmp_path / 'r'}"]) == 2
    assert cli.main(["grpo", f"model.name_or_path={tiny_model}", f"data.path={prompts}", "rewards=[nope]",
                     f"output_dir={tmp_path / 'r'}"]) == 2
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("system_prompt", [None, ""])
def test_system_prompt_empty_reaches_the_template_trl_renders_prompts_with(tmp_path, system_prompt):
    """grpo's `data.system_prompt: ""` left SmolLM2's default system prompt in the prompts GRPOTrainer renders
    with the tokenizer's template (issue 15 item 9)."""
    from transformers import TrainerCallback

    from test_sft import SMOLLM2_TEMPLATE
    from tiny import tiny_tokenizer

    rendered = []

    class Template(TrainerCallback):
        def on_train_begin(self, args, state, control, processing_class=None, **kw):
            rendered.append(processing_class.apply_chat_template([{"role": "user", "content": "Fever?"}],
                                                                 tokenize=False, add_generation_prompt=True))

    model = save_tiny(tmp_path / "smol", tiny_tokenizer(SMOLLM2_TEMPLATE), hidden=32, seed=SEED)
    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(json.dumps({"prompt": QUESTIONS[i % 8], "keywords": ["rest"]}) + "\n" for i in range(8)))
    extra = [] if system_prompt is None else ["data.system_prompt="]
    out = grpo.run(config(model, data, tmp_path / "grpo", "train.max_steps=1", "num_generations=2",
                          "train.batch_size=2", "max_new_tokens=4", *extra), callbacks=[Template()])
    manifest = json.loads((out / "medtune.json").read_text())
    assert rendered and ("named SmolLM" in rendered[0]) == (system_prompt is None)
    assert (manifest["default_system_prompt"] is None) == (system_prompt == "")
