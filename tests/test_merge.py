"""medtune.merge on tiny in-process models: exact averages, layer-wise alphas, streaming, shards, tied heads,
LoRA and reward-model merges, soups, the greedy soup's selection, the sweep's rule, and refusals."""

import json
import random
import shutil
import weakref

import pytest
import torch
from safetensors.torch import load_file, save_file

from medtune import merge, models, runs
from medtune.cli import build_parser
from medtune.config import load_config
from medtune.errors import MedtuneError
from tiny import save_tiny, tiny_tokenizer


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """A base and a 'tuned' tiny Llama (4 layers, tied LM head) of one architecture, different weights."""
    root = tmp_path_factory.mktemp("pair")
    return save_tiny(root / "base", hidden=64, layers=4, seed=0), save_tiny(root / "tuned", hidden=64, layers=4, seed=1)


def weights(folder) -> dict:
    """Every tensor of a folder, whether one file or shards."""
    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        if f.name != models.REWARD_HEAD_FILE:
            out.update(load_file(f))
    return out


def mix(base, tuned, a):
    """The reference computation: alpha * tuned + (1 - alpha) * base in float32, cast to tuned's dtype."""
    return (a * tuned.float() + (1 - a) * base.float()).to(tuned.dtype)


def write_folder(path, tensors: dict, like=None, config: dict | None = None):
    """A model folder holding `tensors`, with the config/tokenizer of `like` (or a bare config)."""
    path.mkdir(parents=True)
    if like is not None:
        for f in like.iterdir():
            if f.is_file() and not f.name.endswith(".safetensors"):
                shutil.copy2(f, path / f.name)
    if config is not None:
        (path / "config.json").write_text(json.dumps(config))
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path / "model.safetensors"), metadata={"format": "pt"})
    return path


def merge_cli(args: list[str]) -> int:
    """`medtune merge ARGS` as the command line parses and runs it; a user error raises MedtuneError."""
    ns = build_parser().parse_args(["merge", *args])
    return ns.func(ns)


def no_leftovers(parent):
    return [p.name for p in parent.iterdir() if p.name.startswith(".")] == []


def logits(model, ids=((5, 17, 42, 99, 3, 250, 7, 8),)):
    with torch.no_grad():
        return model(input_ids=torch.tensor(ids)).logits


# ------------------------------------------------------------------------------------------- average


def test_average_is_exactly_alpha_tuned_plus_one_minus_alpha_base(pair, tmp_path):
    base, tuned = pair
    wb, wt = weights(base), weights(tuned)
    for a in (0.0, 0.3, 1.0):
        out = merge.average(base, tuned, tmp_path / f"a{a}", a, quiet=True)
        got = weights(out)
        assert set(got) == set(wt)
        for name in wt:
            assert got[name].dtype == wt[name].dtype
            assert torch.equal(got[name], mix(wb[name], wt[name], a)), (a, name)
            if a == 0.0:
                assert torch.equal(got[name], wb[name])
            if a == 1.0:
                assert torch.equal(got[name], wt[name])
        manifest = runs.read_manifest(out)
        assert manifest["stage"] == "merge" and manifest["method"] == "average" and manifest["alpha"] == a
        assert manifest["adapter"] is False and manifest["inputs"]["base"]["spec"] == str(base)
        assert (out / "tokenizer.json").is_file() and (out / "chat_template.jinja").is_file()
    mid = weights(tmp_path / "a0.3")["model.layers.0.mlp.up_proj.weight"]
    assert not torch.equal(mid, wt["model.layers.0.mlp.up_proj.weight"]) and not torch.equal(mid, wb["model.layers.0.mlp.up_proj.weight"])

    # dtypes are kept: a bfloat16 tuned model gives bfloat16 output, computed in float32 then cast
    bf16 = write_folder(tmp_path / "bf16", {k: v.to(torch.bfloat16) for k, v in wt.items()}, like=tuned)
    got = weights(merge.average(base, bf16, tmp_path / "mixed", 0.3, quiet=True))
    for name, t in got.items():
        assert t.dtype == torch.bfloat16
        assert torch.equal(t, mix(wb[name], wt[name].to(torch.bfloat16), 0.3))


def test_layer_wise_alphas_split_lower_and_upper_layers(pair, tmp_path):
    base, tuned = pair
    wb, wt = weights(base), weights(tuned)
    out = merge.average(base, tuned, tmp_path / "halves", alpha_lower=0.2, alpha_upper=0.9, quiet=True)
    got = weights(out)
    lower = {"model.embed_tokens.weight"} | {n for n in wt if n.startswith(("model.layers.0.", "model.layers.1."))}
    assert len(lower) == 1 + 2 * 9
    for name in wt:
        assert torch.equal(got[name], mix(wb[name], wt[name], 0.2 if name in lower else 0.9)), name
    m = runs.read_manifest(out)
    assert (m["alpha_lower"], m["alpha_upper"], m["split_layer"], m["layers"]) == (0.2, 0.9, 2, 4)

    # an explicit split; one side defaults to alpha
    got = weights(merge.average(base, tuned, tmp_path / "split1", 0.5, alpha_upper=1.0, split_layer=1, quiet=True))
    for name in wt:
        low = name == "model.embed_tokens.weight" or name.startswith("model.layers.0.")
        assert torch.equal(got[name], mix(wb[name], wt[name], 0.5 if low else 1.0)), name

    assert merge.layer_side("transformer.h.3.attn.c_attn.weight", 4) == "lower"
    assert merge.layer_side("gpt_neox.layers.4.mlp.dense_h_to_4h.weight", 4) == "upper"
    for name in ("transformer.wte.weight", "gpt_neox.embed_in.weight", "model.embed_tokens.weight"):
        assert merge.layer_side(name, 2) == "lower", name
    for name in ("lm_head.weight", "embed_out.weight", "model.norm.weight", "transformer.ln_f.weight"):
        assert merge.layer_side(name, 2) == "upper", name
    with pytest.raises(MedtuneError, match="split_layer must be between 0 and 4"):
        merge.average(base, tuned, tmp_path / "bad", 0.5, split_layer=9, quiet=True)
    with pytest.raises(MedtuneError, match="between 0 and 1"):
        merge.average(base, tuned, tmp_path / "bad", 1.5, quiet=True)


def test_averaging_streams_one_tensor_at_a_time(pair, tmp_path, monkeypatch):
    """Every tensor is read once from each input, the two reads of a name follow each other, and no more than
    one input tensor is alive when the next is read: memory never holds a whole model."""
    import safetensors

    base, tuned = pair
    real = safetensors.safe_open
    reads, alive, peak = [], [], [0]

    class Spy:
        def __init__(self, filename, framework, device="cpu"):
            self.inner, self.filename = real(filename, framework=framework, device=device), str(filename)

        def __enter__(self):
            self.inner.__enter__()
            return self

        def __exit__(self, *exc):
            return self.inner.__exit__(*exc)

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def get_tensor(self, name):
            peak[0] = max(peak[0], sum(r() is not None for r in alive))
            tensor = self.inner.get_tensor(name)
            alive.append(weakref.ref(tensor))
            reads.append((self.filename, name))
            return tensor

    monkeypatch.setattr(safetensors, "safe_open", Spy)
    merge.average(base, tuned, tmp_path / "out", 0.5, quiet=True)
    names = list(weights(tuned))
    assert len(reads) == 2 * len(names) and sorted({n for _, n in reads}) == sorted(names)
    for k in range(0, len(reads), 2):  # base then tuned, name by name
        (fb, nb), (ft, nt) = reads[k], reads[k + 1]
        assert nb == nt and fb.startswith(str(base)) and ft.startswith(str(tuned))
    assert peak[0] <= 1, peak


def test_sharded_output_loads_with_transformers_and_gives_the_same_logits(pair, tmp_path):
    from transformers import AutoModelForCausalLM

    base, tuned = pair
    out = merge.average(base, tuned, tmp_path / "sharded", 0.3, shard_bytes=60_000, quiet=True)
    shards = sorted(out.glob("model-*-of-*.safetensors"))
    assert len(shards) > 3 and not (out / "model.safetensors").exists()
    index = json.loads((out / merge.INDEX).read_text())
    assert set(index["weight_map"].values()) == {s.name for s in shards}
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in weights(out).values())
    for shard in shards[:-1]:  # each shard closes once the next tensor would pass the limit
        assert sum(t.numel() * t.element_size() for t in load_file(shard).values()) <= 60_000 or len(load_file(shard)) == 1

    mb, mt = (AutoModelForCausalLM.from_pretrained(p).eval() for p in (base, tuned))
    sb = mb.state_dict()
    mt.load_state_dict({k: mix(sb[k], v, 0.3) for k, v in mt.state_dict().items()})
    loaded = AutoModelForCausalLM.from_pretrained(out).eval()
    assert torch.equal(logits(loaded), logits(mt))


def test_an_lm_head_tied_in_one_model_and_stored_in_the_other(pair, tmp_path):
    from transformers import AutoModelForCausalLM

    base, tuned = pair
    wb, wt = weights(base), weights(tuned)
    assert "lm_head.weight" not in wb  # tied: stored once, as the embedding
    head = wt["model.embed_tokens.weight"] + 0.5 * torch.randn_like(wt["model.embed_tokens.weight"])
    config = json.loads((tuned / "config.json").read_text()) | {"tie_word_embeddings": False}
    untied = write_folder(tmp_path / "untied", {**wt, "lm_head.weight": head}, like=tuned, config=config)

    got = weights(merge.average(base, untied, tmp_path / "a", 0.4, quiet=True))
    assert torch.equal(got["lm_head.weight"], mix(wb["model.embed_tokens.weight"], head, 0.4))
    assert torch.equal(got["model.embed_tokens.weight"], mix(wb["model.embed_tokens.weight"], wt["model.embed_tokens.weight"], 0.4))

    # the other way round: the output must store its head and say it is untied
    out = merge.average(untied, base, tmp_path / "b", 0.4, quiet=True)
    assert json.loads((out / "config.json").read_text())["tie_word_embeddings"] is False
    model = AutoModelForCausalLM.from_pretrained(out)
    assert torch.equal(model.lm_head.weight.detach(), mix(head, wb["model.embed_tokens.weight"], 0.4))
    assert not torch.equal(model.lm_head.weight, model.model.embed_tokens.weight)


def test_mismatches_are_refused_by_name_and_nothing_is_written(pair, tmp_path):
    base, tuned = pair
    wt = weights(tuned)
    wrong = dict(wt, **{"model.layers.1.mlp.up_proj.weight": torch.zeros(96, 64)})
    other = write_folder(tmp_path / "other", wrong, like=tuned)
    with pytest.raises(MedtuneError, match=r"'model\.layers\.1\.mlp\.up_proj\.weight' has shape \[128, 64\] .* \[96, 64\]"):
        merge.average(base, other, tmp_path / "out" / "x", 0.5, quiet=True)
    fewer = {k: v for k, v in wt.items() if k != "model.layers.0.self_attn.q_proj.weight"}
    missing = write_folder(tmp_path / "missing", fewer, like=tuned)
    with pytest.raises(MedtuneError, match=r"'model\.layers\.0\.self_attn\.q_proj\.weight' is in base .* but not in tuned"):
        merge.average(base, missing, tmp_path / "out" / "x", 0.5, quiet=True)
    with pytest.raises(MedtuneError, match="different architectures"):
        merge.average(base, write_folder(tmp_path / "gru", wt, config={"model_type": "gru"}), tmp_path / "out" / "x", 0.5)
    assert list((tmp_path / "out").iterdir()) == []  # no half-written output, no temporary folders


def test_an_existing_output_is_kept_and_a_failure_leaves_no_half_folder(pair, tmp_path, monkeypatch):
    base, tuned = pair
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(MedtuneError, match="not empty"):
        merge.average(base, tuned, out, 0.5, quiet=True)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    with pytest.raises(MedtuneError, match="one of the inputs"):
        merge.average(base, tuned, tuned, 0.5, overwrite=True, quiet=True)

    flushes = []
    real_flush = merge.weights.ShardWriter._flush

    def failing_flush(self):
        if flushes:
            raise OSError("disk full")
        flushes.append(1)
        real_flush(self)

    monkeypatch.setattr(merge.weights.ShardWriter, "_flush", failing_flush)
    with pytest.raises(OSError, match="disk full"):
        merge.average(base, tuned, tmp_path / "new", 0.5, shard_bytes=60_000, quiet=True)
    with pytest.raises(OSError, match="disk full"):  # even with overwrite, the old folder survives a failure
        merge.average(base, tuned, out, 0.5, shard_bytes=60_000, overwrite=True, quiet=True)
    assert not (tmp_path / "new").exists() and [p.name for p in out.iterdir()] == ["keep.txt"]
    assert no_leftovers(tmp_path)
    monkeypatch.undo()
    merge.average(base, tuned, out, 0.5, overwrite=True, quiet=True)
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").is_file() and no_leftovers(tmp_path)


# ---------------------------------------------------------------------------------------------- LoRA


def write_dialogues(path, n=8):
    qa = [("I have a fever.", "Rest and drink water."), ("My chest hurts.", "Call an ambulance now.")]
    path.write_text("".join(json.dumps({"messages": [{"role": "user", "content": qa[i % 2][0]},
                                                     {"role": "assistant", "content": qa[i % 2][1]}]}) + "\n"
                            for i in range(n)))
    return path


def test_merge_lora_equals_the_in_memory_merge_and_keeps_tokenizer_and_code(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    from medtune.stages import sft

    base = save_tiny(tmp_path / "base", hidden=64)
    GenerationConfig(bos_token_id=1, eos_token_id=2, max_new_tokens=77, temperature=0.3, do_sample=True).save_pretrained(base)
    (base / "modeling_custom.py").write_text("# the model's own code\n")
    config = json.loads((base / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_custom.CustomForCausalLM"}
    (base / "config.json").write_text(json.dumps(config))
    run = sft.run(load_config(sft.SFTConfig, None, [
        f"model.name_or_path={base}", f"data.path={write_dialogues(tmp_path / 'd.jsonl')}", f"output_dir={tmp_path / 'run'}",
        "train.batch_size=2", "train.learning_rate=2e-2", "train.max_steps=2", "train.bf16=false", "lora.r=8"]))

    out = merge.merge_lora(run, tmp_path / "merged")
    assert not (out / "adapter_config.json").exists() and (out / "model.safetensors").is_file()
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    in_memory = models.load(models.ModelConfig(name_or_path=str(run))).model.eval()
    torch.testing.assert_close(logits(merged), logits(in_memory), atol=1e-6, rtol=1e-6)
    assert not torch.allclose(logits(merged), logits(AutoModelForCausalLM.from_pretrained(base)), atol=1e-3)
    tok, run_tok = AutoTokenizer.from_pretrained(out), AutoTokenizer.from_pretrained(run)
    assert tok.chat_template == run_tok.chat_template and tok("患者 fever")["input_ids"] == run_tok("患者 fever")["input_ids"]
    assert json.loads((out / "generation_config.json").read_text())["max_new_tokens"] == 77
    assert (out / "modeling_custom.py").is_file()
    assert json.loads((out / "config.json").read_text())["auto_map"] == config["auto_map"]
    m = runs.read_manifest(out)
    assert m["stage"] == "merge" and m["adapter"] is False and m["merged_from"] == str(run.resolve())
    assert m["model"]["template"] == runs.read_manifest(run)["model"]["template"] and m["chain"] == [str(run.resolve())]
    assert models.load(models.ModelConfig(name_or_path=str(out))).chain == []

    # a LoRA run is a valid input of `average`: merged on the way, alpha 1 gives exactly the merged weights
    wm = weights(out)
    got = weights(merge.average(base, run, tmp_path / "avg", 1.0, quiet=True))
    assert all(torch.equal(got[k], wm[k]) for k in wm) and set(got) == set(wm)
    assert no_leftovers(tmp_path)
    with pytest.raises(MedtuneError, match="not a LoRA run"):
        merge.merge_lora(base, tmp_path / "x")
    with pytest.raises(MedtuneError, match="not empty"):
        merge_cli(["lora", str(run), str(out)])


def test_merged_reward_model_keeps_its_head(tmp_path):
    from medtune.stages import rm

    base = save_tiny(tmp_path / "base", hidden=64)
    rng = random.Random(0)
    with open(tmp_path / "pairs.jsonl", "w") as f:
        for _ in range(16):
            body = " ".join(rng.choice(["fever", "rest", "water", "chest", "pain"]) for _ in range(4))
            f.write(json.dumps({"prompt": "Fever?", "chosen": body + ". Call a doctor.", "rejected": body + ". Hello."}) + "\n")
    run = rm.run(load_config(rm.RMConfig, None, [
        f"model.name_or_path={base}", f"data.path={tmp_path / 'pairs.jsonl'}", f"output_dir={tmp_path / 'rm'}",
        "data.val_size=4", "train.max_steps=3", "train.learning_rate=3e-3", "train.batch_size=4"]))
    out = merge.merge_lora(run, tmp_path / "merged")
    assert (out / models.REWARD_HEAD_FILE).is_file()
    assert not any(k.startswith(models.REWARD_HEAD) for k in weights(out))  # the head is stored on its own
    m, rm_manifest = runs.read_manifest(out), runs.read_manifest(run)
    assert m["reward_head"] == rm_manifest["reward_head"] and m["reward_stats"] == rm_manifest["reward_stats"]
    seqs = [[1, 40, 41, 42, 2], [1, 50, 60, 70, 80, 90, 2], [1, 7, 2]]
    ours, theirs = (models.load_reward_model(str(p)) for p in (out, run))
    assert not hasattr(ours.model, "peft_config")
    torch.testing.assert_close(torch.tensor(models.score_sequences(ours.model, seqs, 0)),
                               torch.tensor(models.score_sequences(theirs.model, seqs, 0)), atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------------------------- soups


def test_soup_of_three_is_their_mean(tmp_path):
    tok = tiny_tokenizer()
    folders = [save_tiny(tmp_path / f"m{i}", tok, hidden=32, seed=i) for i in range(3)]
    ws = [weights(f) for f in folders]
    got = weights(merge.soup(folders, tmp_path / "soup", quiet=True))
    third = 1 / 3
    for name in ws[0]:
        expected = third * ws[0][name].float() + third * ws[1][name].float() + third * ws[2][name].float()
        assert torch.equal(got[name], expected), name
        torch.testing.assert_close(got[name], torch.stack([w[name] for w in ws]).mean(0))
    weighted = weights(merge.soup(folders, tmp_path / "weighted", [1, 1, 2], quiet=True))
    for name in ws[0]:
        assert torch.equal(weighted[name], 0.25 * ws[0][name] + 0.25 * ws[1][name] + 0.5 * ws[2][name]), name
    assert runs.read_manifest(tmp_path / "weighted")["weights"] == [0.25, 0.25, 0.5]
    with pytest.raises(MedtuneError, match="2 weights for 3 models"):
        merge.soup(folders, tmp_path / "x", [1, 2])
    with pytest.raises(MedtuneError, match="at least two"):
        merge.soup(folders[:1], tmp_path / "x")


def test_greedy_soup_adds_ingredients_best_first_while_the_score_does_not_drop(tmp_path):
    """One-tensor 'models' whose score is closeness of the soup's value to 1.5 (rounded, so a tie is a tie)."""
    values = {"D": 4.0, "C": 1.0, "A": 1.25, "E": 0.5625, "B": 2.125}
    folders = [write_folder(tmp_path / k, {"w": torch.full((4,), v)}, config={"model_type": "toy"})
               for k, v in values.items()]
    calls = []

    def score(folder):
        calls.append(folder)
        return -round(abs(load_file(f"{folder}/model.safetensors")["w"].mean().item() - 1.5), 2)

    result = merge.greedy_soup(folders, tmp_path / "soup", score)
    # individual: A -0.25, C -0.5, B -0.62, E -0.94, D -2.5. Soup A; +C -> 1.125 (-0.38) dropped;
    # +B -> 1.6875 (-0.19) kept; +E -> 1.3125 (-0.19, a tie: does not drop) kept; +D -> 1.98 (-0.48) dropped
    assert [r["kept"] for r in result["steps"]] == [False, True, True, False]
    assert [r["model"] for r in result["steps"]] == [str(tmp_path / k) for k in "CBED"]
    assert result["ingredients"] == [str(tmp_path / k) for k in "ABE"] and result["score"] == -0.19
    assert len(calls) == 5 + 4
    soup_w = load_file(tmp_path / "soup" / "model.safetensors")["w"]
    torch.testing.assert_close(soup_w, torch.full((4,), 1.3125))
    m = runs.read_manifest(tmp_path / "soup")
    assert m["method"] == "greedy_soup" and m["greedy"]["ingredients"] == result["ingredients"]
    assert no_leftovers(tmp_path)


# --------------------------------------------------------------------------------------------- sweep


def test_choose_alpha_follows_the_stated_rule():
    def row(alpha, domain, general=None, ppl=None):
        return {"alpha": alpha, "domain_accuracy": domain, "general_accuracy": general, "general_perplexity": ppl}

    table = [row(0, 0.30, 0.60), row(0.25, 0.50, 0.595), row(0.5, 0.70, 0.59), row(0.75, 0.80, 0.58), row(1, 0.90, 0.50)]
    assert merge.choose_alpha(table) == 0.5  # 0.75 loses 2 points, more than the default 1
    assert [r["admissible"] for r in table] == [True, True, True, False, False]
    assert merge.choose_alpha(table, max_general_drop=3) == 0.75
    assert merge.choose_alpha(table, max_general_drop=0) == 0
    tie = [row(0, 0.3, 0.6), row(0.5, 0.7, 0.6), row(1, 0.7, 0.6)]
    assert merge.choose_alpha(tie) == 0.5  # equal domain scores: the smaller alpha
    ppl = [row(0, 0.2, ppl=10.0), row(0.5, 0.6, ppl=10.5), row(1, 0.9, ppl=10.6)]
    assert merge.choose_alpha(ppl) == 0.5 and merge.choose_alpha(ppl, max_perplexity_increase=0.1) == 1
    both = [row(0, 0.2, 0.6, 10.0), row(0.5, 0.6, 0.6, 12.0), row(1, 0.9, 0.5, 10.0)]
    assert merge.choose_alpha(both) == 0  # 0.5 forgets by perplexity, 1 by accuracy


def test_sweep_writes_models_results_table_and_plot_and_chooses_by_the_rule(pair, tmp_path, capsys):
    from matplotlib.image import imread

    from medtune.eval.runner import EvalSettings

    base, tuned = pair
    options = [("fever", "fracture", "rash", "cough"), ("insulin", "aspirin", "water", "rest")]
    with open(tmp_path / "exam.jsonl", "w") as f:
        for i in range(6):
            f.write(json.dumps({"question": f"Question {i}: which one fits the patient?", "options": list(options[i % 2]),
                                "answer": i % 4}) + "\n")
    text = tmp_path / "general.txt"
    text.write_text("The weather is fine today.\nShe reads a book in the garden.\nTrains leave at noon.\n")
    table, chosen = merge.sweep(base, tuned, tmp_path / "sweep", [0.5, 1], general_text=[text],
                                eval_settings=EvalSettings(files={"mcq": str(tmp_path / "exam.jsonl")}, batch_size=4),
                                limit=4, max_perplexity_increase=0.05, keep_models=False)
    out = tmp_path / "sweep"
    assert [r["alpha"] for r in table] == [0.0, 0.5, 1.0]  # the reference alpha 0 is always added
    saved = json.loads((out / "sweep.json").read_text())
    assert saved["chosen"] == chosen and [r["alpha"] for r in saved["table"]] == [0.0, 0.5, 1.0]
    for r in saved["table"]:
        results = json.loads((out / "eval" / f"alpha-{r['alpha']:g}" / "results.json").read_text())
        assert r["domain_accuracy"] == results["tasks"]["mcq"]["accuracy"] and results["tasks"]["mcq"]["n"] == 4
        assert r["general_perplexity"] == results["perplexity"]["general.txt"]["perplexity"]
        # keep_models=False: only the chosen alpha's model stays
        assert (out / f"alpha-{r['alpha']:g}").exists() == (r["alpha"] == chosen) == (r["model"] is not None)
    # the rule, recomputed from the measured table
    ref = saved["table"][0]["general_perplexity"]
    ok = [r for r in saved["table"] if r["general_perplexity"] <= ref * 1.05 + 1e-12]
    best = max(r["domain_accuracy"] for r in ok)
    assert chosen == min(r["alpha"] for r in ok if r["domain_accuracy"] == best)
    assert [r["admissible"] for r in saved["table"]] == [r in ok for r in saved["table"]]
    wb, wt, got = weights(base), weights(tuned), weights(out / f"alpha-{chosen:g}")
    assert all(torch.equal(got[k], mix(wb[k], wt[k], chosen)) for k in wt)
    png = (out / "tradeoff.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and imread(out / "tradeoff.png").shape[2] in (3, 4)
    md = (out / "sweep.md").read_text()
    assert "| alpha | domain accuracy" in md and f"Chosen: alpha {chosen:g}" in md and "tradeoff.png" in md
    assert f"chosen alpha {chosen:g}" in capsys.readouterr().out
    assert no_leftovers(out)
    with pytest.raises(MedtuneError, match="general measure"):
        merge.sweep(base, tuned, tmp_path / "s2", [0.5])


# ------------------------------------------------------------------ a failed merge keeps the earlier output


def lora_run(base, path):
    """A medtune LoRA run folder on `base` (an adapter with non-zero B, as training leaves it), made without training."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base), LoraConfig(r=4, target_modules=["q_proj"]))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_()
    model.save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    runs.write_json(path / runs.MANIFEST, {"stage": "sft", "status": "completed", "adapter": True,
                                           "model": {"spec": str(base), "weights": str(base), "base": str(base)}})
    return path


def earlier_output(path):
    """A finished earlier output: replaced only once a new one is complete."""
    path.mkdir()
    (path / "keep.txt").write_text("the earlier output")
    return path


def unchanged(path) -> bool:
    return [p.name for p in path.iterdir()] == ["keep.txt"] and (path / "keep.txt").read_text() == "the earlier output"


def test_a_sweep_that_fails_late_keeps_the_earlier_sweep_folder(pair, tmp_path, monkeypatch):
    """Today's failure: `sweep(overwrite=True)` emptied the folder before the models were read. A second model of
    another shape (found once the files are checked), or an exception midway, must leave the earlier folder."""
    from medtune.eval import runner

    base, tuned = pair
    text = tmp_path / "general.txt"
    text.write_text("The weather is fine today.\nTrains leave at noon.\n")
    wrong = dict(weights(tuned), **{"model.layers.1.mlp.up_proj.weight": torch.zeros(96, 64)})
    other = write_folder(tmp_path / "other", wrong, like=tuned)
    out = earlier_output(tmp_path / "sweep")
    with pytest.raises(MedtuneError, match="has shape"):
        merge.sweep(base, other, out, [0.5], general_text=[text], limit=2, overwrite=True)
    assert unchanged(out) and no_leftovers(tmp_path)

    evaluated = []

    def failing_evaluate(model, settings, output_dir):  # the first model is written, then its evaluation fails
        evaluated.append(model)
        raise RuntimeError("evaluation failed")

    monkeypatch.setattr(runner, "evaluate", failing_evaluate)
    with pytest.raises(RuntimeError, match="evaluation failed"):
        merge.sweep(base, tuned, out, [0.5], general_text=[text], limit=2, overwrite=True)
    assert evaluated == [str(out / "alpha-0")] and unchanged(out) and no_leftovers(tmp_path)
    with pytest.raises(RuntimeError, match="evaluation failed"):  # a new folder: nothing of the attempt stays
        merge.sweep(base, tuned, tmp_path / "new", [0.5], general_text=[text], limit=2)
    assert not (tmp_path / "new").exists() and no_leftovers(tmp_path)


def test_every_merge_command_keeps_the_earlier_output_when_it_fails(pair, tmp_path, monkeypatch, capsys):
    base, tuned = pair
    wrong = dict(weights(tuned), **{"model.layers.1.mlp.up_proj.weight": torch.zeros(96, 64)})
    other = write_folder(tmp_path / "other", wrong, like=tuned)
    out = earlier_output(tmp_path / "out")
    # a bad second model, found once the first has been read
    with pytest.raises(MedtuneError, match="has shape"):
        merge.soup([base, other], out, overwrite=True, quiet=True)
    from medtune.cli import main

    assert main(["merge", "average", str(base), str(other), str(out), "--alpha", "0.5", "--overwrite"]) == 2
    assert "has shape" in capsys.readouterr().err
    assert main(["merge", "soup", str(out), str(base), str(other), "--overwrite"]) == 2
    assert unchanged(out) and no_leftovers(tmp_path)

    # greedy soup: the scoring fails after the first candidate soup was written
    calls = []

    def score(folder):
        calls.append(folder)
        if len(calls) == 3:
            raise RuntimeError("scoring failed")
        return 0.5

    with pytest.raises(RuntimeError, match="scoring failed"):
        merge.greedy_soup([base, tuned], out, score, overwrite=True, quiet=True)
    assert len(calls) == 3 and unchanged(out) and no_leftovers(tmp_path)

    # LoRA merge: an exception while the merged folder is written
    run = lora_run(base, tmp_path / "run")
    from medtune.merge import methods

    def failing_manifest(folder, manifest):
        raise OSError("disk full")

    monkeypatch.setattr(methods, "write_manifest", failing_manifest)
    with pytest.raises(OSError, match="disk full"):
        merge.merge_lora(run, out, overwrite=True)
    with pytest.raises(OSError, match="disk full"):
        merge.average(base, tuned, out, 0.5, overwrite=True, quiet=True)
    assert unchanged(out) and no_leftovers(tmp_path)
    monkeypatch.undo()
    merge.merge_lora(run, out, overwrite=True, quiet=True)  # success replaces it
    assert not (out / "keep.txt").exists() and runs.read_manifest(out)["method"] == "lora" and no_leftovers(tmp_path)


# ----------------------------------------------------------------------------------------------- CLI


def test_cli_average_soup_and_errors(pair, tmp_path, capsys):
    base, tuned = pair
    assert merge_cli(["average", str(base), str(tuned), str(tmp_path / "avg"), "--alpha", "0.25",
                      "--shard-size", "100KB"]) == 0
    out = capsys.readouterr().out
    assert "alpha 0.25" in out and str(tmp_path / "avg") in out and (tmp_path / "avg" / merge.INDEX).is_file()
    wb, wt, got = weights(base), weights(tuned), weights(tmp_path / "avg")
    assert all(torch.equal(got[k], mix(wb[k], wt[k], 0.25)) for k in wt)

    assert merge_cli(["average", str(base), str(tuned), str(tmp_path / "lw"), "--alpha-lower", "0", "--alpha-upper",
                      "1", "--split-layer", "3"]) == 0
    got = weights(tmp_path / "lw")
    assert torch.equal(got["model.layers.2.mlp.up_proj.weight"], wb["model.layers.2.mlp.up_proj.weight"])
    assert torch.equal(got["model.layers.3.mlp.up_proj.weight"], wt["model.layers.3.mlp.up_proj.weight"])

    assert merge_cli(["soup", str(tmp_path / "soup"), str(base), str(tuned), "--weights", "1,3"]) == 0
    assert "soup of 2 models" in capsys.readouterr().out
    name = "model.layers.1.self_attn.q_proj.weight"
    assert torch.equal(weights(tmp_path / "soup")[name], 0.25 * wb[name] + 0.75 * wt[name])

    with pytest.raises(MedtuneError, match="needs --alpha"):
        merge_cli(["average", str(base), str(tuned), str(tmp_path / "x")])
    with pytest.raises(MedtuneError, match="leave out --alpha"):
        merge_cli(["average", str(base), str(tuned), str(tmp_path / "x"), "--alpha", "0.5", "--sweep", "0,1"])
    with pytest.raises(SystemExit):
        merge_cli(["average", str(base), str(tuned), str(tmp_path / "x"), "--shard-size", "lots"])
    with pytest.raises(MedtuneError, match="model path does not exist"):
        merge_cli(["soup", str(tmp_path / "x"), str(base), str(tmp_path / "nope")])
    assert not (tmp_path / "x").exists()


def test_cli_sweep_and_greedy_soup_run_evaluations(tmp_path, capsys):
    tok = tiny_tokenizer()
    folders = [str(save_tiny(tmp_path / f"m{i}", tok, hidden=32, seed=i)) for i in range(2)]
    exam = tmp_path / "exam.jsonl"
    exam.write_text("".join(json.dumps({"question": f"Q{i}?", "options": ["fever", "rest", "cough"], "answer": i % 3}) + "\n"
                            for i in range(3)))
    (tmp_path / "general.txt").write_text("The weather is fine today.\nTrains leave at noon.\n")
    assert merge_cli(["average", *folders, str(tmp_path / "sweep"), "--sweep", "1", "--tasks", "mcq", "--file",
                      f"mcq={exam}", "--general-text", str(tmp_path / "general.txt"), "--max-ppl-increase", "0.5",
                      "--limit", "2"]) == 0
    saved = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert [r["alpha"] for r in saved["table"]] == [0.0, 1.0] and saved["rule"]["max_perplexity_increase"] == 0.5
    assert saved["limit"] == 2 and "chosen alpha" in capsys.readouterr().out
    assert merge_cli(["soup", str(tmp_path / "soup"), *folders, "--greedy", "--tasks", "mcq",
                      "--file", f"mcq={exam}"]) == 0
    assert "greedy soup: kept" in capsys.readouterr().out
    m = runs.read_manifest(tmp_path / "soup")
    assert m["method"] == "greedy_soup" and len(m["greedy"]["individual"]) == 2 and len(m["greedy"]["steps"]) == 1
    assert all(0 <= r["score"] <= 1 for r in m["greedy"]["individual"])
    assert no_leftovers(tmp_path)
