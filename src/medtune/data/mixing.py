"""Mixing several data sources at chosen proportions (replay of general data during domain training).

A recipe lists sources with a `weight` (a share of the mixture) or a `count` (an absolute amount), measured
in examples or in tokens (`mix_by`). Items are drawn source by source, always from the source furthest
behind its target share, so the mixture holds its ratio at every point of the stream, not only at the end;
this is what lets the same code mix in-memory data and streams of unknown length.

When the mixture stops:
- weights and no `total`: when the first source runs out. That source is used once, whole; every other
  source is down-sampled to keep the ratio (medical 0.7 + general 0.3 uses all the medical text and as much
  general text as 3/7 of it).
- weights and a `total`: when the mixture reaches `total`; a source that runs out first starts again
  (up-sampling, reshuffled for in-memory data).
- counts: when every source has given its count, repeating sources that are too small.

`Mixer.report()` says what was achieved: examples and tokens per source, shares of each, and how many
passes each source needed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

from medtune.config import at_least, one_of
from medtune.errors import ConfigError

MIX_UNITS = ("examples", "tokens")


@dataclass
class Source:
    """One data source of a mixture. Give `weight` (a share; weights are normalised) or `count` (an
    absolute number of examples or tokens, per `mix_by`), not both. `name` labels it in the summary.
    `text_mode` (pretraining text only): line or paragraph for this source's .txt files ("" = data.text_mode)."""

    path: str
    weight: float = field(default=0.0, metadata=at_least(0))
    count: int = field(default=0, metadata=at_least(0))
    name: str = ""
    text_mode: str = field(default="", metadata=one_of("", "line", "paragraph"))


def check_sources(sources: list[Source], where: str = "data.sources") -> None:
    """Every source has either a weight or a count, and all sources use the same kind."""
    if not sources:
        return
    for i, s in enumerate(sources):
        if s.weight and s.count:
            raise ConfigError("give a weight or a count, not both", where=f"{where}[{i}]")
    kinds = {"count" if s.count else "weight" if s.weight else "none" for s in sources}
    if "none" in kinds and len(sources) > 1:
        i = next(i for i, s in enumerate(sources) if not s.weight and not s.count)
        raise ConfigError("this source has neither a weight nor a count", where=f"{where}[{i}]",
                          hint="give every source a weight (e.g. 0.7 and 0.3) or a count")
    if kinds == {"count", "weight"}:
        raise ConfigError("mix weights and counts in one list", where=where,
                          hint="use weights for every source, or counts for every source")


def source_label(source: Source) -> str:
    return source.name or source.path


class Mixer:
    """Interleave `streams` (one factory per source returning a fresh iterator of items) per the sources'
    weights or counts. `size(item)` gives an item's length in tokens (used when unit is "tokens", and for
    the report). Iterate the Mixer for the mixed items; `report()` afterwards."""

    def __init__(self, sources: list[Source], streams: list[Callable[[int], Iterable]], *, unit: str = "examples",
                 total: int = 0, size: Callable[[object], int] = len):
        if unit not in MIX_UNITS:
            raise ConfigError(f"unknown mix unit '{unit}'", hint="choose examples or tokens")
        check_sources(sources)
        self.sources, self.streams, self.unit, self.total, self.size = sources, streams, unit, total, size
        by_count = any(s.count for s in sources)
        weights = [s.weight if s.weight else 1.0 for s in sources]
        self.by_count = by_count
        self.targets = [float(s.count) for s in sources] if by_count else [w / sum(weights) for w in weights]
        n = len(sources)
        self.examples, self.tokens, self.passes = [0] * n, [0] * n, [0] * n
        self.available = [None] * n  # items in one pass of each source, known once a pass has ended
        self.stopped_by = None

    def _amount(self, i: int) -> int:
        return self.tokens[i] if self.unit == "tokens" else self.examples[i]

    def __iter__(self) -> Iterator:
        n = len(self.sources)
        self.examples, self.tokens, self.passes = [0] * n, [0] * n, [1] * n
        in_pass = [0] * n  # items given in the current pass of each source
        iters = [iter(self.streams[i](0)) for i in range(n)]
        active = set(range(n))
        while active:
            # the source furthest behind its target (share or count) gives the next item
            i = min(active, key=lambda k: (self._amount(k) / self.targets[k], k))
            try:
                item = next(iters[i])
            except StopIteration:
                if in_pass[i] == 0:
                    raise ConfigError(f"data source '{source_label(self.sources[i])}' has no usable examples",
                                      hint="check its path and filters") from None
                if self.passes[i] == 1:
                    self.available[i] = in_pass[i]
                if not self.by_count and not self.total:
                    self.stopped_by = i
                    return
                self.passes[i] += 1
                in_pass[i] = 0
                iters[i] = iter(self.streams[i](self.passes[i] - 1))
                continue
            in_pass[i] += 1
            self.examples[i] += 1
            self.tokens[i] += self.size(item)
            yield item
            if self.by_count and self._amount(i) >= self.targets[i]:
                active.discard(i)
            elif self.total and sum(self._amount(k) for k in range(n)) >= self.total:
                return

    def report(self, examples: list[int] | None = None, tokens: list[int] | None = None) -> dict:
        """Achieved mixture: per source examples, tokens, shares and passes, beside the target. `examples` and
        `tokens` replace the Mixer's own counts (e.g. to report the training part after a held-out split)."""
        examples = self.examples if examples is None else examples
        tokens = self.tokens if tokens is None else tokens
        ex_total, tok_total = sum(examples) or 1, sum(tokens) or 1
        out = {"unit": self.unit, "sources": []}
        for i, s in enumerate(self.sources):
            row = {
                "name": source_label(s), "path": s.path,
                "examples": examples[i], "tokens": tokens[i],
                "share_examples": round(examples[i] / ex_total, 4),
                "share_tokens": round(tokens[i] / tok_total, 4),
                "passes": self.passes[i] if examples[i] else 0,
                "available_examples": self.available[i],
            }
            if self.by_count:
                row["target_count"] = int(self.targets[i])
            else:
                row["target_share"] = round(self.targets[i], 4)
            out["sources"].append(row)
        if self.stopped_by is not None:
            out["stopped_when_exhausted"] = source_label(self.sources[self.stopped_by])
        return out


def shuffled(items: list, seed: int) -> Callable[[int], Iterator]:
    """A stream factory over an in-memory list: each pass is a fresh shuffle (seeded by pass number)."""

    def stream(pass_no: int) -> Iterator:
        order = list(range(len(items)))
        random.Random(seed * 1_000_003 + pass_no).shuffle(order)
        return (items[k] for k in order)

    return stream


def mix_lists(sources: list[Source], items: list[list], *, unit: str = "examples", total: int = 0, seed: int = 0,
              size: Callable[[object], int] = len) -> tuple[list, dict]:
    """Mix in-memory lists (one per source). Returns (mixed items, report)."""
    mixer = Mixer(sources, [shuffled(lst, seed + k) for k, lst in enumerate(items)], unit=unit, total=total, size=size)
    mixed = list(mixer)
    return mixed, mixer.report()


def hold_out(items: list, n_val: int, key: Callable[[object], object]) -> tuple[list, list, int]:
    """The first `n_val` items are held out; every other item equal to a held-out one (by `key`, e.g. an
    up-sampled copy) is removed from training so nothing held out is trained on. Returns (train, val, removed)."""
    val = items[:n_val]
    held = {key(x) for x in val}
    train = [x for x in items[n_val:] if key(x) not in held]
    return train, val, len(items) - n_val - len(train)


def format_report(report: dict) -> str:
    """One line per source: `name: N examples (share), T tokens (share), passes`."""
    lines = []
    for r in report["sources"]:
        target = (f"target {r['target_share']:.0%}" if "target_share" in r else f"target {r['target_count']} {report['unit']}")
        passes = f", {r['passes']} passes" if r["passes"] > 1 else ""
        lines.append(f"{r['name']}: {r['examples']} examples ({r['share_examples']:.1%}), "
                     f"{r['tokens']} tokens ({r['share_tokens']:.1%}); {target}{passes}")
    if report.get("stopped_when_exhausted"):
        lines.append(f"(stopped when '{report['stopped_when_exhausted']}' was used up)")
    return "\n".join(lines)


def iter_chunks(iterable: Iterable, n: int) -> Iterator[list]:
    """Lists of up to `n` consecutive items."""
    chunk = []
    for x in iterable:
        chunk.append(x)
        if len(chunk) == n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
