"""Batched generation (`health.replies`, `Engine.run_many`) gives the greedy replies that one-at-a-time
generation gives, token for token, while rows finish at different steps and waiting prompts take their rows."""

import pytest
import torch

from medtune import chat
from medtune.eval import health
from medtune.serve.engine import Engine, SamplingParams
from tiny import save_tiny

QUESTIONS = ["What causes a fever?", "Is chest pain an emergency?",
             "My child has had a cough for three weeks and now a mild fever in the evenings; what should we do?",
             "Hi", "高血压患者应该注意什么？", "List three signs of dehydration in older adults.",
             "Can I take ibuprofen with a cold?"]


@pytest.fixture(scope="module")
def cm(tmp_path_factory):
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is faster on the shared 2-core machine
    yield chat.load_chat_model(str(save_tiny(tmp_path_factory.mktemp("m") / "tiny", hidden=64)))
    torch.set_num_threads(before)


@pytest.mark.parametrize("batch_size", [1, 3, 16])
@pytest.mark.parametrize("penalty", [1.0, 1.1])
def test_batched_replies_equal_one_at_a_time(cm, batch_size, penalty):
    settings = chat.GenerationSettings(temperature=0.0, max_new_tokens=20, repetition_penalty=penalty)
    conversations = [[{"role": "user", "content": q}] for q in QUESTIONS]
    batched = health.replies(cm, conversations, settings, batch_size=batch_size, progress=False)
    alone = [chat.complete(cm, c, settings) for c in conversations]
    assert [r.token_ids for r in batched] == [r.token_ids for r in alone]
    assert [(r.text, r.stopped) for r in batched] == [(r.text, r.stopped) for r in alone]


def test_rows_that_finish_early_hand_their_row_to_waiting_prompts(cm):
    # a context limit of 48 tokens ends each reply at a different step (its prompt's length decides)
    prompts = [list(range(5, 5 + n)) for n in (40, 12, 30, 7, 44, 20, 3, 25)]
    params = SamplingParams(max_new_tokens=30, temperature=0.0)
    engine = Engine(cm.model, cm.tokenizer, cm.stop_ids, max_concurrency=3, max_queue=0, max_context=48)
    order = []
    finals = engine.run_many(prompts, params, on_done=lambda k, ev: order.append(k))
    assert sorted(order) == list(range(len(prompts))) and order != list(range(len(prompts)))
    assert engine.peak_batch == 3
    one = Engine(cm.model, cm.tokenizer, cm.stop_ids, max_concurrency=1, max_queue=0, max_context=48)
    for p, ev in zip(prompts, finals):
        alone = one.run(p, params)
        assert ev.token_ids == alone.token_ids and ev.delta == alone.delta
        assert len(ev.token_ids) == min(30, 48 - len(p))


def test_run_health_batches_and_keeps_prompt_order(cm):
    prompts = [{"prompt": q, "kind": "medical", "lang": None} for q in QUESTIONS]
    settings = chat.GenerationSettings(temperature=0.0, max_new_tokens=12, repetition_penalty=1.1)
    result = health.run_health(cm, prompts, settings, progress=False, batch_size=4)
    assert [r["prompt"] for r in result["responses"]] == QUESTIONS
    alone = [chat.complete(cm, [{"role": "user", "content": q}], settings).text for q in QUESTIONS]
    assert [r["response"] for r in result["responses"]] == alone


def test_a_model_without_a_kv_cache_runs_its_prompts_one_at_a_time():
    from tiny import TinyGRUConfig, TinyGRUForCausalLM, tiny_tokenizer

    tok = tiny_tokenizer()
    torch.manual_seed(0)
    model = TinyGRUForCausalLM(TinyGRUConfig(vocab_size=len(tok), hidden_size=32)).eval()
    prompts = [tok(q, add_special_tokens=False)["input_ids"] for q in QUESTIONS[:4]]
    params = SamplingParams(max_new_tokens=8)
    engine = Engine(model, tok, [tok.eos_token_id], max_concurrency=4, max_queue=0)
    finals = engine.run_many(prompts, params)
    assert engine.batched is False and engine.peak_batch == 1
    assert [ev.token_ids for ev in finals] == [Engine(model, tok, [tok.eos_token_id]).run(p, params).token_ids
                                               for p in prompts]
