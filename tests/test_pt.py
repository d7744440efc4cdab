"""Continued pretraining on a tiny in-process model: packing keeps documents apart, it learns, mixes sources
at the ratio asked, streams, resumes, and trains new vocabulary."""

import json

import pytest
import torch

from medtune import runs
from medtune.config import load_config
from medtune.stages import pt
from margins import SEED, above, below, lr, train_seed
from tiny import save_tiny, tiny_llama, tiny_tokenizer

MEDICAL = ["The patient has a fever and a cough. Take paracetamol and rest.",
           "Chest pain with shortness of breath is an emergency: call an ambulance.",
           "Diabetes: thirst, frequent urination, weight loss. Test: HbA1c. Treatment: metformin.",
           "患者发热咳嗽，建议休息并多喝水。"]
GENERAL = ["Hello, how are you? I am fine, thank you.", "The train leaves at nine and arrives at ten.",
           "Paris is the capital of France.", "Water boils at one hundred degrees."]


def write_text(path, docs, n):
    path.write_text("\n".join(docs[i % len(docs)] + f" ({i})" for i in range(n)) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("m") / "tiny", hidden=64, seed=SEED)


def config(model, out, *extra):
    return load_config(pt.PTConfig, None, [
        f"model.name_or_path={model}", f"output_dir={out}", "data.block_size=64",
        "train.batch_size=2", f"train.learning_rate={lr(2e-2)}", "train.logging_steps=1", "train.bf16=false",
        "lora.r=8", f"train.seed={train_seed()}", *extra,
    ])


# ------------------------------------------------------------------------------------------ packing


def _segments(position_ids):
    starts = [i for i, p in enumerate(position_ids) if p == 0] + [len(position_ids)]
    return list(zip(starts[:-1], starts[1:]))


def test_packed_logits_equal_per_document_logits():
    tok = tiny_tokenizer()
    model = tiny_llama(tok)
    texts = MEDICAL + GENERAL + [" ".join(MEDICAL)]  # the last one is longer than a block: cut into pieces
    docs = list(pt.tokenize(texts, tok))
    stats = {}
    rows = list(pt.build_rows(docs, 96, "documents", stats=stats))
    assert stats["documents_split"] == 1 and len(rows) < len(texts)
    checked = 0
    with torch.no_grad():
        for row in rows:
            ids = torch.tensor([row["input_ids"]])
            packed = model(input_ids=ids, position_ids=torch.tensor([row["position_ids"]]), use_cache=False).logits[0]
            for a, b in _segments(row["position_ids"]):
                alone = model(input_ids=ids[:, a:b]).logits[0]
                torch.testing.assert_close(packed[a:b], alone, atol=1e-5, rtol=1e-5)
                checked += 1
        assert checked == len(docs) + 1  # every document, and both pieces of the long one
        # the check can fail: in concat mode a document sees the one before it
        row = next(pt.build_rows(docs, 96, "concat"))
        assert len(row["input_ids"]) == 96
        ids = torch.tensor([row["input_ids"]])
        full = model(input_ids=ids).logits[0]
        second = len(docs[0])
        alone = model(input_ids=ids[:, second:]).logits[0]
        assert not torch.allclose(full[second:], alone, atol=1e-3)


def test_documents_end_with_eos_and_never_learn_across_the_boundary():
    tok = tiny_tokenizer()
    docs = list(pt.tokenize(["a b c", "d e"], tok))
    assert all(d[-1] == tok.eos_token_id for d in docs)
    (row,) = pt.build_rows(docs, 64, "documents")
    for a, b in _segments(row["position_ids"]):
        assert row["labels"][a] == -100  # a document's first token is not predicted from the one before
        assert row["labels"][a + 1:b] == row["input_ids"][a + 1:b]  # every other token, EOS included, is trained
    concat = list(pt.build_rows(docs * 20, 16, "concat"))
    assert all(len(r["input_ids"]) == 16 for r in concat[:-1]) and concat[0]["labels"] == concat[0]["input_ids"]
    assert sum(len(r["input_ids"]) for r in concat) == sum(len(d) for d in docs * 20)  # nothing dropped


# ------------------------------------------------------------------------------------------ stage


def test_pt_learns_and_reports_the_mixture_it_achieved(tiny_model, tmp_path):
    med = write_text(tmp_path / "med.txt", MEDICAL, 70)
    gen = write_text(tmp_path / "gen.txt", GENERAL, 200)
    recipe = tmp_path / "pt.yaml"
    recipe.write_text(f"""stage: pt
model: {{name_or_path: {tiny_model}}}
data:
  sources:
    - {{path: {med}, weight: 0.7, name: medical}}
    - {{path: {gen}, weight: 0.3, name: general}}
  mix_by: examples
  block_size: 64
  val_size: 10
train: {{max_steps: 25, batch_size: 4, learning_rate: {lr(2e-2)}, eval_steps: 25, logging_steps: 5, bf16: false,
        seed: {train_seed()}}}
output_dir: {tmp_path / 'run'}
""")
    out = pt.run(load_config(pt.PTConfig, recipe))
    m = runs.read_manifest(out)
    assert m["status"] == "completed" and m["stage"] == "pt" and m["packing"] == "documents"
    below("eval_perplexity / before", m["metrics"]["eval_perplexity"] / m["metrics"]["eval_perplexity_before"], 0.7,
          m["metrics"])
    assert any("eval_perplexity" in h for h in m["history"])
    shares = {r["name"]: r for r in m["mixture"]["sources"]}
    docs = shares["medical"]["examples"] + shares["general"]["examples"]
    assert docs == 100 - 10  # 70 medical used whole + 30 general, less 10 held out
    assert shares["medical"]["share_examples"] == pytest.approx(0.7, abs=0.04)
    assert shares["general"]["available_examples"] is None or shares["general"]["available_examples"] == 200
    assert m["data"][0]["documents"] == 70 and m["data"][1]["documents"] == 200


def test_streaming_resumes_where_it_stopped(tiny_model, tmp_path):
    from test_sft import _Crash, _crash_after_checkpoint

    data = write_text(tmp_path / "med.txt", MEDICAL + GENERAL, 40)
    common = ["data.streaming=true", "data.buffer_docs=8", f"data.path={data}", "train.max_steps=8",
              "train.save_steps=4", "data.val_size=4", "train.eval_steps=8"]
    straight = pt.run(config(tiny_model, tmp_path / "a", *common))
    with pytest.raises(_Crash):
        pt.run(config(tiny_model, tmp_path / "b", *common), callbacks=[_crash_after_checkpoint(4)])
    resumed = pt.run(config(tiny_model, tmp_path / "b", *common, "resume=true"))
    h_a = {h["step"]: h["loss"] for h in runs.read_manifest(straight)["history"] if "loss" in h}
    h_b = {h["step"]: h["loss"] for h in runs.read_manifest(resumed)["history"] if "loss" in h}
    assert min(k for k in h_b if k > 4) == 5
    for step in range(5, 9):
        assert h_b[step] == pytest.approx(h_a[step], rel=1e-4), step
    m = runs.read_manifest(straight)
    below("eval_loss / eval_loss_before", m["metrics"]["eval_loss"] / m["metrics"]["eval_loss_before"], 1.0, m["metrics"])


def test_streaming_needs_max_steps_and_a_held_out_count(tiny_model, tmp_path):
    from medtune.errors import ConfigError

    data = write_text(tmp_path / "d.txt", MEDICAL, 10)
    with pytest.raises(ConfigError, match="max_steps"):
        pt.run(config(tiny_model, tmp_path / "r", f"data.path={data}", "data.streaming=true"))
    with pytest.raises(ConfigError, match="number of documents"):
        pt.run(config(tiny_model, tmp_path / "r", f"data.path={data}", "data.streaming=true",
                      "train.max_steps=2", "data.val_size=0.1"))
    assert not (tmp_path / "r").exists()


def test_new_vocabulary_starts_at_the_mean_of_its_pieces_and_is_trained(tiny_model, tmp_path):
    from medtune import models
    from medtune.data import vocab

    tok = tiny_tokenizer()
    model = tiny_llama(tok)
    before = model.get_input_embeddings().weight.detach().clone()
    pieces = tok(" empagliflozin", add_special_tokens=False)["input_ids"]
    ids, skipped = vocab.extend(model, tok, ["empagliflozin", "and", "二甲双胍"])
    assert len(pieces) > 2 and len(ids) == 2 and skipped == ["and"]  # " and" is one token already
    assert tok("take empagliflozin daily", add_special_tokens=False)["input_ids"].count(ids[0]) == 1
    assert tok.decode(tok("take empagliflozin daily")["input_ids"]) == "take empagliflozin daily"
    torch.testing.assert_close(model.get_input_embeddings().weight[ids[0]], before[pieces].mean(0))

    words = tmp_path / "words.txt"
    words.write_text("# domain words\nempagliflozin\n", encoding="utf-8")
    data = write_text(tmp_path / "d.txt", ["Take empagliflozin for diabetes.", "empagliflozin lowers glucose."], 30)
    out = pt.run(config(tiny_model, tmp_path / "run", f"data.path={data}", "train.max_steps=6",
                        f"vocab.words={words}"))
    m = runs.read_manifest(out)
    assert m["vocabulary"]["added"] == 1
    new_id = m["vocabulary"]["new_token_ids"][0]
    loaded = models.load(models.ModelConfig(name_or_path=str(out)))
    emb = loaded.model.get_input_embeddings().weight
    assert emb.shape[0] == len(loaded.tokenizer) == len(tiny_tokenizer()) + 1
    assert loaded.tokenizer.convert_ids_to_tokens(new_id) == " empagliflozin"
    start = tiny_llama(tiny_tokenizer(), hidden=64, seed=SEED).get_input_embeddings().weight[pieces].mean(0).detach()
    # trained during PT, and saved with the adapter
    above("new embedding row moved (max abs change)", float((emb[new_id] - start).abs().max()), 1e-4)


def test_missing_words_are_the_frequent_split_ones():
    from medtune.data import vocab

    tok = tiny_tokenizer()
    # a Chinese word is found from its varied contexts (Chinese has no spaces to mark it)
    texts = ["Patients on empagliflozin need checks."] * 6 + ["服用恩格列净后复查。", "恩格列净可以降糖。", "每天一次恩格列净。"] * 3
    texts += ["rare wordzzz"]
    found = [w for w, _, _ in vocab.missing_words(texts, tok, top=10, min_count=3)]
    assert "empagliflozin" in found and "恩格列净" in found and "wordzzz" not in found


def test_shared_article_text_alone_and_mixed_with_the_demo_text(tiny_model, tmp_path, shared_data):
    article = shared_data / "medicalgpt" / "en_article_tail500.txt"
    out = pt.run(config(tiny_model, tmp_path / "one", f"data.path={article}", "data.text_mode=paragraph",
                        "train.max_steps=2"))
    assert runs.read_manifest(out)["data_stats"]["train_documents"] > 50
    recipe = tmp_path / "mix.yaml"
    recipe.write_text(json.dumps({"stage": "pt", "data": {"sources": [
        {"path": "medtune:demo/pt.txt", "weight": 0.8, "name": "demo"},
        {"path": str(article), "weight": 0.2, "name": "article", "text_mode": "paragraph"}], "mix_by": "tokens"}}))
    cfg = load_config(pt.PTConfig, recipe, [f"model.name_or_path={tiny_model}", f"output_dir={tmp_path / 'mix'}",
                                            "train.max_steps=2", "train.bf16=false"])
    m = runs.read_manifest(pt.run(cfg))
    shares = {r["name"]: r["share_tokens"] for r in m["mixture"]["sources"]}
    assert m["data"][0]["documents"] == 100 and m["data"][1]["documents"] == 66  # each source's own text mode
    assert shares["demo"] == pytest.approx(0.8, abs=0.03) and shares["article"] == pytest.approx(0.2, abs=0.03)


# ------------------------------------------------------------------------------------------ memory

_MEASURE = r"""
import json, resource, sys
sys.path.insert(0, sys.argv[1])
from medtune.config import load_config
from medtune.stages import pt
from tiny import tiny_tokenizer

corpus, streaming, n_docs = sys.argv[2], sys.argv[3] == "stream", int(sys.argv[4])
cfg = load_config(pt.PTConfig, None, [f"data.path={corpus}", f"data.streaming={str(streaming).lower()}",
                                      "train.max_steps=10", "data.block_size=512", "data.buffer_docs=512"])
tok = tiny_tokenizer()
start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
plan = pt.plan_corpus(cfg, pt.plan_sources(cfg.data), tok)
rows = tokens = 0
before = None if streaming else start  # in memory: from the start
for row in (plan.rows() if callable(plan.rows) else plan.rows):
    rows += 1
    tokens += len(row["input_ids"])
    if rows == 1000 and streaming:  # libraries loaded and buffers sized: from here on, memory must stay flat
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        tokens_before = tokens
    if streaming and plan.tally["examples"][0] >= n_docs:  # one whole pass over the corpus
        break
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"growth_mb": (peak - before) / 1024, "rows": rows, "tokens": tokens,
                  "tokens_measured": tokens - (tokens_before if streaming else 0)}))
"""


def _corpus(path, megabytes):
    import random

    words = ("fever cough patient diabetes metformin insulin asthma chest pain rest water doctor the a and "
             "发热 咳嗽 患者 建议 休息").split()
    rng = random.Random(0)
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        while f.tell() < megabytes * 2**20:
            f.write(" ".join(rng.choice(words) for _ in range(rng.randint(20, 400))) + "\n")
            n += 1
    return n


@pytest.mark.slow
def test_streaming_holds_its_memory_budget_on_a_corpus_bigger_than_the_budget(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    budget_mb, corpus_mb = 10, 20
    corpus = tmp_path / "big.txt"
    n_docs = _corpus(corpus, corpus_mb)
    assert corpus.stat().st_size > budget_mb * 2**20

    def measure(mode):
        out = subprocess.run([sys.executable, "-c", _MEASURE, str(Path(__file__).parent), str(corpus), mode, str(n_docs)],
                             capture_output=True, text=True, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    streamed = measure("stream")  # memory growth after the first 1,000 rows, to the end of the corpus
    assert streamed["tokens"] > corpus_mb * 2**20 / 8  # it really went through the whole corpus
    assert streamed["tokens_measured"] > 0.9 * streamed["tokens"]  # the budget held over >90% of it
    assert streamed["growth_mb"] < budget_mb, streamed
    in_memory = measure("memory")  # the same corpus held in memory: many times the budget
    assert in_memory["growth_mb"] > 10 * budget_mb, in_memory
    assert in_memory["tokens"] == pytest.approx(streamed["tokens"], rel=0.02)


def test_data_vocab_lists_candidates_and_writes_a_word_list(tiny_model, tmp_path, capsys):
    from medtune.cli import main

    corpus = write_text(tmp_path / "c.txt", ["Take empagliflozin daily.", "empagliflozin and metformin."], 20)
    words = tmp_path / "words.txt"
    assert main(["data", "vocab", str(corpus), "--tokenizer", str(tiny_model), "--top", "3", "--out", str(words)]) == 0
    assert words.read_text().splitlines()[0] == "empagliflozin"
    assert "vocab.words=" in capsys.readouterr().out
    assert main(["data", "vocab", str(tmp_path / "missing.txt"), "--tokenizer", str(tiny_model)]) == 2
