"""A model that ships its own code (Baichuan, ChatGLM...) through every stage with trust_remote_code.

The model folder is built here from tests/fixtures/remote_code: its own configuration_*.py and modeling_*.py
named by `auto_map`, a model_type transformers does not know, a causal-LM class only (no sequence
classification), a legacy tuple KV cache, and a tokenizer without a chat template (the named fallback
`baichuan2` is used, adding its control tokens). SFT -> RM -> DPO -> merge lora -> chat -> eval run through the
CLI as a user runs them; the merged folder keeps the code and loads in plain transformers."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from medtune import models, runs
from medtune.cli import main
from tiny import tiny_tokenizer

FIXTURE = Path(__file__).parent / "fixtures" / "remote_code"
DEMO = Path(__file__).resolve().parents[1] / "src" / "medtune" / "assets" / "demo"
CODE_FILES = ("configuration_tinybaichuan.py", "modeling_tinybaichuan.py")


def remote_code_model(folder: Path) -> Path:
    """A local folder as a remote-code model's hub repository looks: code files, config with auto_map, weights."""
    from transformers import AutoConfig, AutoModelForCausalLM

    folder.mkdir(parents=True)
    for name in CODE_FILES:
        shutil.copy2(FIXTURE / name, folder / name)
    tok = tiny_tokenizer(chat_template=None)
    (folder / "config.json").write_text(json.dumps({
        "model_type": "medtune_tiny_baichuan", "architectures": ["TinyBaichuanForCausalLM"],
        "auto_map": {"AutoConfig": "configuration_tinybaichuan.TinyBaichuanConfig",
                     "AutoModelForCausalLM": "modeling_tinybaichuan.TinyBaichuanForCausalLM"},
        "vocab_size": len(tok), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 4, "pad_token_id": tok.pad_token_id, "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id}))
    config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config, trust_remote_code=True).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def logits(model, ids=((5, 17, 42, 99, 3, 250, 7, 8),)):
    with torch.no_grad():
        return model(input_ids=torch.tensor(ids)).logits


@pytest.mark.slow
def test_remote_code_model_through_sft_rm_dpo_merge_chat_and_eval(tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    base = remote_code_model(tmp_path / "tiny-baichuan")
    assert not (base / "tokenizer_config.json").read_text().count("chat_template")
    with pytest.raises(Exception):  # transformers knows no such architecture: only its own code loads it
        AutoModelForCausalLM.from_pretrained(base)
    capsys.readouterr()
    common = ["model.trust_remote_code=true", "train.bf16=false", "train.batch_size=4", "train.logging_steps=1"]

    # without trust_remote_code: one line that says what to do, exit 2, no run folder
    assert main(["sft", f"model.name_or_path={base}", "data.path=medtune:demo/sft.jsonl",
                 f"output_dir={tmp_path / 'refused'}", "train.max_steps=1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "model.trust_remote_code=true" in err and not (tmp_path / "refused").exists()

    sft = tmp_path / "sft"
    assert main(["sft", f"model.name_or_path={base}", "model.template=baichuan2", "data.path=medtune:demo/sft.jsonl",
                 "data.max_samples=24", "data.max_length=192", "train.max_steps=3", "train.learning_rate=5e-3",
                 "lora.target_modules=[W_pack,o_proj]", f"output_dir={sft}", *common]) == 0
    m = runs.read_manifest(sft)
    assert m["status"] == "completed" and m["adapter"] and m["model"]["template"] == "baichuan2"
    assert m["parameters"]["trainable"] > 0 and m["metrics"]["steps"] == 3
    from transformers import AutoTokenizer

    run_tok = AutoTokenizer.from_pretrained(sft)
    assert run_tok.convert_tokens_to_ids("<reserved_106>") >= 400  # the fallback's control tokens were added
    assert "<reserved_107>" in run_tok.chat_template

    rm = tmp_path / "rm"
    assert main(["rm", f"model.name_or_path={sft}", "data.path=medtune:demo/preference.jsonl", "data.max_samples=24",
                 "data.val_size=8", "data.max_length=160", "train.max_steps=2", "train.learning_rate=3e-3",
                 f"output_dir={rm}", *common]) == 0
    m = runs.read_manifest(rm)
    assert m["status"] == "completed" and m["reward_head"]
    reward = models.load_reward_model(str(rm), trust_remote_code=True)
    assert type(reward.model).__name__ == "TinyBaichuanForCausalLM"
    scores = models.score_sequences(reward.model, [[1, 40, 41, 2], [1, 50, 60, 70, 2]], 0)
    assert len(scores) == 2 and all(s == s for s in scores) and scores[0] != scores[1]

    dpo = tmp_path / "dpo"
    assert main(["dpo", f"model.name_or_path={sft}", "data.path=medtune:demo/preference.jsonl", "data.max_samples=24",
                 "data.val_size=8", "data.max_length=160", "train.max_steps=2", "train.learning_rate=5e-3",
                 "lora.target_modules=[W_pack]", f"output_dir={dpo}", *common]) == 0
    assert runs.read_manifest(dpo)["status"] == "completed"

    merged = tmp_path / "merged"
    assert main(["merge", "lora", str(dpo), str(merged), "--trust-remote-code"]) == 0
    for name in CODE_FILES:
        assert (merged / name).read_text() == (FIXTURE / name).read_text()
    config = json.loads((merged / "config.json").read_text())
    assert config["auto_map"]["AutoModelForCausalLM"].endswith("modeling_tinybaichuan.TinyBaichuanForCausalLM")
    assert config["model_type"] == "medtune_tiny_baichuan"
    plain = AutoModelForCausalLM.from_pretrained(merged, trust_remote_code=True).eval()  # plain transformers
    assert type(plain).__name__ == "TinyBaichuanForCausalLM"
    in_memory = models.load(models.ModelConfig(name_or_path=str(dpo), trust_remote_code=True)).model.eval()
    torch.testing.assert_close(logits(plain), logits(in_memory), atol=1e-5, rtol=1e-5)
    original = AutoModelForCausalLM.from_pretrained(base, trust_remote_code=True).eval()
    assert not torch.allclose(logits(plain)[..., :400], logits(original), atol=1e-3)  # the tuning is in the weights
    assert "<reserved_107>" in AutoTokenizer.from_pretrained(merged).chat_template  # the SFT run's template carried on
    capsys.readouterr()

    assert main(["chat", str(merged), "--prompt", "发热怎么办？", "--temperature", "0", "--max-new-tokens", "6",
                 "--trust-remote-code"]) == 0
    cap = capsys.readouterr()
    assert cap.out.strip() and "not medical advice" in (cap.out + cap.err).lower()

    evald = tmp_path / "eval"
    assert main(["eval", str(merged), "--tasks", "mcq", "--file", f"mcq={DEMO / 'exam.jsonl'}", "--limit", "6",
                 "--trust-remote-code", "-o", str(evald)]) == 0
    gen = tmp_path / "eval-generate"
    assert main(["eval", str(merged), "--tasks", "mcq", "--file", f"mcq={DEMO / 'exam.jsonl'}", "--limit", "3",
                 "--mode", "generate", "--max-new-tokens", "4", "--trust-remote-code", "-o", str(gen)]) == 0
    for folder in (evald, gen):
        results = json.loads((folder / "results.json").read_text())
        assert results["tasks"]["mcq"]["n"] in (3, 6), results


def test_loglik_scoring_of_a_model_with_its_own_cache_layout_equals_the_reference(tmp_path):
    """The batched log-likelihood scorer reuses a transformers KV cache; a remote-code model's tuple cache cannot
    be regrouped that way, and its multi-token choices must still score exactly as one forward per choice."""
    from transformers import AutoModelForCausalLM

    from medtune.eval import scoring

    base = remote_code_model(tmp_path / "tiny-baichuan")
    model = AutoModelForCausalLM.from_pretrained(base, trust_remote_code=True).eval()
    tok = tiny_tokenizer(chat_template=None)
    requests = [scoring.Request("Question: fever and cough? Answer:", [" rest", " paracetamol and water", " A"]),
                scoring.Request("患者发热咳嗽，建议", ["休息", "多喝水并就医"]),
                scoring.Request("Chest pain:", [" call an ambulance", " wait"])]
    with torch.no_grad():
        out = model(input_ids=torch.tensor([[5, 6, 7]]), use_cache=True)
    assert isinstance(out.past_key_values, tuple)  # the legacy layout this test is about
    fast = scoring.loglik_scores(model, tok, requests, batch_size=3)
    reference = scoring.loglik_reference(model, tok, requests)
    torch.testing.assert_close(torch.tensor([s for r in fast for s in r]),
                               torch.tensor([s for r in reference for s in r]), atol=1e-4, rtol=1e-4)
