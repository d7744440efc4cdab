"""PPO: the maths (GAE, KL-shaped rewards, clipped losses) against hand computations, and on tiny models:
the reward rises, the KL penalty holds the policy near the reference, a crashed run resumes exactly."""

import json

import pytest
import torch

from medtune.cli import main
from medtune.config import load_config
from medtune.stages import ppo, rm, sft
from margins import SEED, above, below, lr, train_seed
from test_rm import QUESTIONS, write_pairs
from test_rm import config as rm_config
from tiny import save_tiny


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run many times faster on one thread than on two contended ones."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_gae_matches_a_hand_computation_and_ignores_positions_outside_the_answer():
    gamma, lam = 0.9, 0.8
    rewards = torch.tensor([[9.0, 0.5, -0.2, 1.0, 7.0]])
    values = torch.tensor([[5.0, 0.3, 0.1, 0.4, 3.0]])
    mask = torch.tensor([[0.0, 1.0, 1.0, 1.0, 0.0]])  # a prompt position before, padding after
    adv, ret = ppo.gae(rewards, values, mask, gamma, lam)
    r, v = [0.5, -0.2, 1.0], [0.3, 0.1, 0.4]
    expected, running = [], 0.0
    for t in reversed(range(3)):
        nxt = v[t + 1] if t + 1 < 3 else 0.0
        running = r[t] + gamma * nxt - v[t] + gamma * lam * running
        expected.insert(0, running)
    assert adv[0, 1:4].tolist() == pytest.approx(expected)
    assert adv[0, 0] == 0 and adv[0, 4] == 0
    assert ret[0, 1:4].tolist() == pytest.approx([a + b for a, b in zip(expected, v)])


def test_token_rewards_put_the_score_on_the_last_answer_token():
    logps = torch.tensor([[0.0, -1.0, -2.0, 0.0], [0.0, -1.0, 0.0, 0.0]])
    ref = torch.tensor([[0.0, -1.5, -1.0, 0.0], [0.0, -0.5, 0.0, 0.0]])
    mask = torch.tensor([[0.0, 1.0, 1.0, 0.0], [0.0, 1.0, 0.0, 0.0]])
    rewards, kl = ppo.token_rewards(torch.tensor([2.0, -1.0]), logps, ref, mask, kl_coef=0.1)
    assert torch.allclose(kl, torch.tensor([[0, 0.5, -1.0, 0], [0, -0.5, 0, 0]]))
    assert torch.allclose(rewards, torch.tensor([[0, -0.05, 0.1 + 2.0, 0], [0, 0.05 - 1.0, 0, 0]]))


def test_clipped_losses():
    mask = torch.ones(1, 2)
    adv = torch.tensor([[1.0, -2.0]])
    same = torch.tensor([[-1.0, -1.0]])
    pg, vf, diag = ppo.ppo_losses(same, same, adv, torch.zeros(1, 2), torch.zeros(1, 2), torch.zeros(1, 2), mask, 0.2, 0.2)
    assert float(pg) == pytest.approx(0.5) and float(vf) == 0 and diag["clipfrac"] == 0  # ratio 1: -mean(adv)
    # ratio 2 on a positive advantage is clipped to 1.2: no gradient pushes it further
    new = torch.tensor([[-1.0 + 0.6931, -1.0]], requires_grad=True)
    pg, _, diag = ppo.ppo_losses(new, same, adv, torch.zeros(1, 2), torch.zeros(1, 2), torch.zeros(1, 2), mask, 0.2, 0.2)
    pg.backward()
    assert new.grad[0, 0] == 0 and diag["clipfrac"] == 0.5
    # the value loss takes the worse of the clipped and unclipped errors
    _, vf, _ = ppo.ppo_losses(same, same, adv, torch.tensor([[1.0, 0.0]]), torch.zeros(1, 2),
                              torch.tensor([[1.0, 0.0]]), mask, 0.2, 0.2)
    assert float(vf) == pytest.approx(0.5 * 0.8 ** 2 / 2)


def test_whiten_over_the_mask():
    x = torch.tensor([[100.0, 1.0, 2.0, 3.0]])
    mask = torch.tensor([[0.0, 1.0, 1.0, 1.0]])
    w = ppo.whiten(x, mask) * mask
    vals = w[0, 1:]
    assert float(vals.mean()) == pytest.approx(0, abs=1e-6) and float(vals.pow(2).mean()) == pytest.approx(1, abs=1e-4)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("ppo")
    model = save_tiny(root / "m", hidden=64, seed=SEED)
    pairs = write_pairs(root / "pairs.jsonl", seed=SEED)
    reward_model = rm.run(rm_config(model, pairs, root / "rm", f"train.seed={train_seed()}"))
    return model, pairs, reward_model


def config(setup, out, *extra, policy=None):
    model, pairs, reward_model = setup
    return load_config(ppo.PPOConfig, None, [
        f"model.name_or_path={policy or model}", f"reward_model={reward_model}", f"data.path={pairs}",
        f"output_dir={out}", "sampling.max_new_tokens=8", f"train.learning_rate={lr(1e-3)}",
        f"train.seed={train_seed()}", *extra])


@pytest.fixture(scope="module")
def policy(setup, tmp_path_factory):
    """An SFT run that ends its answers half the time as the reward model's chosen pairs do and half as its
    rejected ones: a choice PPO can learn whatever the seed. (From the untouched random model the reward does
    not rise above a frozen policy's in 60 steps on most seeds; docs/testing.md.)"""
    root = tmp_path_factory.mktemp("sft")
    data = root / "sft.jsonl"
    endings = ["Call an ambulance now.", "Hello, how are you?"]  # the chosen and rejected endings of write_pairs
    data.write_text("".join(json.dumps({"messages": [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]},
                                                     {"role": "assistant", "content": endings[i // 5 % 2]}]}) + "\n"
                            for i in range(40)))
    return sft.run(load_config(sft.SFTConfig, None, [
        f"model.name_or_path={setup[0]}", f"data.path={data}", f"output_dir={root / 'run'}", "train.batch_size=4",
        f"train.learning_rate={lr(1e-2)}", "train.max_steps=20", "lora.r=8", "train.bf16=false",
        f"train.seed={train_seed()}"]))


def last10(manifest, key):
    return sum(h[key] for h in manifest["history"][-10:]) / 10


def test_reward_rises_and_the_kl_penalty_holds_the_policy_near_the_reference(setup, policy, tmp_path):
    def train(name, *extra):
        out = ppo.run(config(setup, tmp_path / name, "train.steps=60", *extra, policy=policy))
        return out, json.loads((out / "medtune.json").read_text())

    loose, m = train("loose", "train.kl_coef=0.05")
    assert m["stage"] == "ppo" and m["status"] == "completed" and m["adapter"]
    assert m["history"][0]["kl"] == 0.0  # the first rollout comes from the untouched policy = the reference, exactly
    # the control: the same prompts and sampling with the update switched off
    _, frozen = train("frozen", "train.kl_coef=0.05", "train.learning_rate=1e-12")
    # rewards in units of the reward model's spread (normalize_reward), so every seed's reward model compares
    above("reward over the frozen policy's, last 10 steps", last10(m, "reward_used") - last10(frozen, "reward_used"),
          0.15, m["metrics"])
    below("kl, mean of last 10 steps", last10(m, "kl"), 8, m["metrics"])
    below("kl, peak", m["metrics"]["kl_max"], 15, m["metrics"])
    _, tight = train("tight", "train.kl_coef=1.0")
    # a stronger penalty keeps the policy closer
    below("kl of kl_coef 1 minus kl of kl_coef 0.05, last 10 steps", last10(tight, "kl") - last10(m, "kl"), 0)
    assert (loose / "adapter_model.safetensors").is_file() and (loose / "value_head.safetensors").is_file()


def test_resume_repeats_the_uninterrupted_run(setup, tmp_path):
    common = ["train.steps=6", "train.save_steps=3"]
    straight = ppo.run(config(setup, tmp_path / "a", *common))

    def crash(step, metrics):
        if step == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ppo.run(config(setup, tmp_path / "b", *common), callbacks=[crash])
    assert json.loads((tmp_path / "b" / "medtune.json").read_text())["status"] == "failed"
    resumed = ppo.run(config(setup, tmp_path / "b", *common, "resume=true"))
    ha, hb = (json.loads((p / "medtune.json").read_text())["history"] for p in (straight, resumed))
    assert [h["step"] for h in hb] == [1, 2, 3, 4, 5, 6]
    assert [h["reward"] for h in hb] == pytest.approx([h["reward"] for h in ha], abs=1e-4)

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(straight / "logs"))
    events.Reload()
    logged = [(e.step, e.value) for e in events.Scalars("ppo/reward")]  # TensorBoard holds every step's figures
    assert [s for s, _ in logged] == [1, 2, 3, 4, 5, 6]
    assert [v for _, v in logged] == pytest.approx([h["reward"] for h in ha], abs=1e-5)
    # the resumed run's curve: step 4, logged before the crash and again after the resume, is there once
    from test_sft import _tensorboard_points

    assert sorted(s for s, _ in _tensorboard_points(resumed / "logs", "ppo/reward")) == [1, 2, 3, 4, 5, 6]


def test_bad_settings_stop_before_training(setup, tmp_path, capsys):
    model, pairs, reward_model = setup
    base = [f"model.name_or_path={model}", f"data.path={pairs}", f"output_dir={tmp_path / 'r'}"]
    assert main(["ppo", *base, f"reward_model={model}"]) == 2
    assert "not a reward model run" in capsys.readouterr().err
    assert main(["ppo", *base, f"reward_model={reward_model}", "lora.method=full"]) == 2
    assert main(["ppo", *base, f"reward_model={reward_model}", "train.batch_size=6", "train.mini_batch_size=4"]) == 2
    assert main(["ppo", *base]) == 2
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("system_prompt", [None, ""])
def test_system_prompt_empty_means_none_even_when_the_template_has_a_default(setup, tmp_path, system_prompt):
    """ppo's `data.system_prompt: ""` was documented as none, yet SmolLM2's template added its default system
    prompt to every prompt (issue 15 item 9)."""
    from medtune import models
    from medtune.data import preference, templates
    from test_sft import SMOLLM2_TEMPLATE
    from tiny import tiny_tokenizer

    smol = save_tiny(tmp_path / "smol", tiny_tokenizer(SMOLLM2_TEMPLATE), hidden=32, seed=SEED)
    extra = [] if system_prompt is None else ["data.system_prompt="]
    out = ppo.run(config(setup, tmp_path / "ppo", "train.steps=1", "train.batch_size=2", "train.mini_batch_size=2",
                         "data.max_samples=4", *extra, policy=smol))
    manifest = json.loads((out / "medtune.json").read_text())
    tok = models.load_tokenizer(str(out))
    prompt_ids, _ = preference.encode_pair(tok, templates.resolve_format(tok, manifest["model"]["template"]),
                                           [{"role": "user", "content": "Fever?"}], "Rest.")
    assert ("named SmolLM" in tok.decode(prompt_ids)) == (system_prompt is None)
    assert (manifest["default_system_prompt"] is None) == (system_prompt == "")
