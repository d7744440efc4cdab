import torch

from medtune.data import packing
from tiny import tiny_llama, tiny_tokenizer


def test_best_fit_decreasing_respects_block_and_keeps_every_example():
    lengths = [7, 3, 5, 2, 8, 1, 4, 6, 2, 9]
    bins = packing.best_fit_decreasing(lengths, 10)
    assert sorted(i for b in bins for i in b) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in b) <= 10 for b in bins)
    assert len(bins) == 5  # 47 tokens: 5 bins is the minimum for block 10


def test_packed_logits_equal_per_example_logits():
    tok = tiny_tokenizer()
    model = tiny_llama(tok)
    g = torch.Generator().manual_seed(1)
    examples = []
    for n in (9, 5, 12, 3):
        ids = torch.randint(3, len(tok), (n,), generator=g).tolist()
        examples.append({"input_ids": ids, "labels": ids})
    rows = packing.pack(examples, block_size=32, seed=0)
    assert len(rows) == 1
    collate = packing.Collator(tok.pad_token_id)
    batch = collate(rows)
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits[0]
        # walk the row: each example's logits must equal its own forward pass
        start = 0
        pos = batch["position_ids"][0].tolist()
        starts = [i for i, p in enumerate(pos) if p == 0] + [len(pos)]
        for a, b in zip(starts, starts[1:]):
            alone = model(input_ids=batch["input_ids"][:, a:b], use_cache=False).logits[0]
            torch.testing.assert_close(packed[a:b], alone, atol=1e-5, rtol=1e-5)
            start = b
    assert start == len(pos)
    assert packing.packing_supported(model)


def test_labels_never_cross_an_example_boundary_and_padding_is_ignored():
    examples = [{"input_ids": [5, 6, 7], "labels": [5, 6, 7]}, {"input_ids": [8, 9], "labels": [8, 9]}]
    rows = packing.pack(examples, block_size=8, seed=0)
    batch = packing.Collator(0)(rows + packing.unpacked([{"input_ids": [4], "labels": [4]}]))
    labels, pos = batch["labels"], batch["position_ids"]
    # first label of every example is masked (nothing learns to predict the next example's first token)
    assert (labels[pos == 0] == -100).all()
    # the short row is padded with ignored labels, and its padding starts a sequence of its own
    assert batch["labels"][1].tolist() == [-100, -100, -100, -100, -100]
    assert batch["position_ids"][1].tolist() == [0, 0, 1, 2, 3]
    assert "attention_mask" not in batch
    assert "attention_mask" in packing.Collator(0, attention_mask=True)(rows)


def test_padded_batch_loss_equals_unpadded_loss():
    tok = tiny_tokenizer()
    model = tiny_llama(tok)
    a = {"input_ids": [10, 11, 12, 13, 14, 15], "labels": [10, 11, 12, 13, 14, 15]}
    b = {"input_ids": [20, 21, 22], "labels": [-100, 21, 22]}
    batch = packing.Collator(tok.pad_token_id)(packing.unpacked([a, b]))
    with torch.no_grad():
        both = model(**batch, use_cache=False).loss
        la = model(**packing.Collator(0)(packing.unpacked([a])), use_cache=False).loss
        lb = model(**packing.Collator(0)(packing.unpacked([b])), use_cache=False).loss
    # token-weighted mean: a has 5 predicted labels, b has 2
    torch.testing.assert_close(both, (la * 5 + lb * 2) / 7, atol=1e-5, rtol=1e-5)
