"""Mixing sources by weight or count, in examples or tokens, with the achieved mixture reported."""

import pytest

from medtune.data import mixing
from medtune.data.mixing import Source
from medtune.errors import ConfigError


def items(prefix, n, length=1):
    return [f"{prefix}{i}" * length for i in range(n)]


def test_weights_use_the_smallest_source_whole_and_downsample_the_others():
    med, gen = items("m", 70), items("g", 1000)
    mixed, report = mixing.mix_lists([Source("med", weight=0.7), Source("gen", weight=0.3)], [med, gen], seed=1)
    assert sum(x.startswith("m") for x in mixed) == 70 and sorted(x for x in mixed if x.startswith("m")) == sorted(med)
    assert sum(x.startswith("g") for x in mixed) == 30
    assert report["stopped_when_exhausted"] == "med"
    assert [r["share_examples"] for r in report["sources"]] == [0.7, 0.3]
    # the ratio holds all along the stream, not only at its end
    first = mixed[:20]
    assert 13 <= sum(x.startswith("m") for x in first) <= 15


def test_token_weights_balance_tokens_not_documents():
    med, gen = items("m", 100, length=1), items("g", 100, length=4)  # general documents are 4x longer
    size = len
    mixed, report = mixing.mix_lists([Source("med", weight=0.5), Source("gen", weight=0.5)], [med, gen],
                                     unit="tokens", seed=0, size=size)
    med_tok = sum(len(x) for x in mixed if x.startswith("m"))
    gen_tok = sum(len(x) for x in mixed if x.startswith("g"))
    assert abs(med_tok - gen_tok) / (med_tok + gen_tok) < 0.05
    assert report["sources"][0]["share_tokens"] == pytest.approx(0.5, abs=0.05)
    assert report["sources"][0]["examples"] > 3 * report["sources"][1]["examples"]


def test_counts_and_totals_upsample_small_sources():
    small, big = items("s", 10), items("b", 100)
    mixed, report = mixing.mix_lists([Source("s", count=25), Source("b", count=40)], [small, big], seed=3)
    assert sum(x.startswith("s") for x in mixed) == 25 and sum(x.startswith("b") for x in mixed) == 40
    assert report["sources"][0]["passes"] == 3 and report["sources"][1]["passes"] == 1
    # every pass of an up-sampled source uses every item before any repeats
    s_items = [x for x in mixed if x.startswith("s")]
    assert sorted(s_items[:10]) == sorted(small) and sorted(s_items[10:20]) == sorted(small)
    mixed, report = mixing.mix_lists([Source("s", weight=1), Source("b", weight=1)], [small, big], total=60, seed=0)
    assert len(mixed) == 60 and sum(x.startswith("s") for x in mixed) == 30
    assert report["sources"][0]["passes"] == 3


def test_the_same_seed_gives_the_same_mixture():
    a = mixing.mix_lists([Source("a", weight=1), Source("b", weight=2)], [items("a", 50), items("b", 50)], seed=7)[0]
    b = mixing.mix_lists([Source("a", weight=1), Source("b", weight=2)], [items("a", 50), items("b", 50)], seed=7)[0]
    c = mixing.mix_lists([Source("a", weight=1), Source("b", weight=2)], [items("a", 50), items("b", 50)], seed=8)[0]
    assert a == b and a != c


def test_bad_source_lists_are_refused():
    with pytest.raises(ConfigError, match="not both"):
        mixing.check_sources([Source("a", weight=1, count=3)])
    with pytest.raises(ConfigError, match="neither a weight nor a count"):
        mixing.check_sources([Source("a", weight=1), Source("b")])
    with pytest.raises(ConfigError, match="weights and counts"):
        mixing.check_sources([Source("a", weight=1), Source("b", count=3)])
    with pytest.raises(ConfigError, match="no usable examples"):
        mixing.mix_lists([Source("a", weight=1), Source("b", weight=1)], [items("a", 3), []], total=10)


def test_hold_out_removes_upsampled_copies_of_held_out_items():
    train, val, removed = mixing.hold_out(["a", "b", "a", "c", "b", "d"], 2, key=str)
    assert val == ["a", "b"] and train == ["c", "d"] and removed == 2
