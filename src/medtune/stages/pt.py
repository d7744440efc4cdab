"""Continued pretraining (PT): train a model on plain medical text so it learns the domain.

Reads top to bottom: config -> run folder -> data check -> tokenizer (+ new domain tokens) -> documents
(mixed from several sources, tokenised, EOS after each) -> rows of `block_size` tokens -> model (+ LoRA)
-> Trainer -> train (or resume) -> save -> manifest.

Packing (`data.packing`):
- `documents` (default): documents are packed into rows with position ids restarting at each document, so no
  token attends across a document boundary (block-diagonal attention; checked numerically on the model,
  with a fallback to one document per row). A document longer than `block_size` is cut into pieces.
- `concat`: the classic concatenate-and-chunk: every row is exactly `block_size` tokens and attention runs
  across document boundaries (the EOS between documents is the only separator).
- `none`: one document (or piece) per row, padded.

Streaming (`data.streaming: true`) reads the files lazily, tokenises in small batches and packs within a
window of `data.buffer_docs` documents, so memory stays flat whatever the corpus size; it needs
`train.max_steps` because the corpus length is not known in advance, and it cycles through the mixture.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ClassVar, Iterable, Iterator, Literal

from medtune import runs
from medtune.config import at_least, check
from medtune.data import formats, mixing, packing
from medtune.data.mixing import Source
from medtune.data.packing import build_rows, tokenize
from medtune.errors import ConfigError, MedtuneError
from medtune.models import LoraConfig, ModelConfig
from medtune.stages import common
from medtune.stages.common import TrainConfig

TEXT_SUFFIXES = (".txt", ".jsonl")


@dataclass
class PTDataConfig:
    """Pretraining text.

    path: files or folders of .txt / .jsonl ({"text": ...}) read as one source; `medtune:demo/pt.txt` is
      the demo text shipped inside the package.
    sources: instead of `path`, several sources mixed by weight or count, e.g.
      [{path: medical/, weight: 0.7}, {path: general.txt, weight: 0.3, text_mode: paragraph}] (data/mixing.py).
    mix_by: tokens or examples (documents): what weights and counts measure.
    mix_total: stop the mixture at this many tokens/documents (0 = when the first source is used up).
    text_mode: .txt files hold one document per line (line) or blank-line-separated documents (paragraph).
    block_size: tokens per training row.
    packing: documents (block-diagonal, default), concat (concatenate and chunk) or none (one per row).
    streaming: read lazily for corpora larger than memory (needs train.max_steps).
    buffer_docs: documents packed together at a time when streaming.
    val_path: held-out text files for perplexity (else `val_size` documents are held out of the mixture).
    val_size: held-out share (0 < x < 1) or count (x >= 1) of documents; streaming needs a count.
    max_samples: use only the first N documents of each source (0 = all).
    """

    path: list[str] = field(default_factory=list)
    sources: list[Source] = field(default_factory=list)
    mix_by: Literal["tokens", "examples"] = "tokens"
    mix_total: int = field(default=0, metadata=at_least(0))
    text_mode: Literal["line", "paragraph"] = "line"
    block_size: int = field(default=1024, metadata=at_least(8))
    packing: Literal["documents", "concat", "none"] = "documents"
    streaming: bool = False
    buffer_docs: int = field(default=2048, metadata=at_least(1))
    val_path: list[str] = field(default_factory=list)
    val_size: float = field(default=0.0, metadata=at_least(0))
    max_samples: int = field(default=0, metadata=at_least(0))


@dataclass
class VocabConfig:
    """Vocabulary extension (data/vocab.py): new tokens start as the mean of their old pieces and are trained.

    words: a file with one word per line to add as tokens.
    add_missing: also add the N most frequent corpus words the tokenizer splits into several pieces.
    min_count: a corpus word must occur this often to be considered.
    scan_documents: how many documents of each source to scan for missing words.
    """

    words: str = ""
    add_missing: int = field(default=0, metadata=at_least(0))
    min_count: int = field(default=5, metadata=at_least(1))
    scan_documents: int = field(default=100_000, metadata=at_least(1))


@dataclass
class PTConfig:
    """`medtune pt RECIPE [key=value ...]`. See recipes/pt_*.yaml."""

    stage: ClassVar[str] = "pt"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: PTDataConfig = field(default_factory=PTDataConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    vocab: VocabConfig = field(default_factory=VocabConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    output_dir: str = field(default="runs/pt", metadata=check(lambda v: v.strip() != "", "a folder name"))
    resume: bool = False
    overwrite: bool = False


# ---------------------------------------------------------------------------------------------- data


def source_files(path: str) -> list[Path]:
    """A file, or every .txt/.jsonl file under a folder (sorted, so the order is the same on every machine)."""
    from medtune.data import resolve_path

    p = Path(resolve_path(path))
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in TEXT_SUFFIXES)
        if not files:
            raise MedtuneError("folder holds no .txt or .jsonl files", where=str(p))
        return files
    if not p.exists():
        raise MedtuneError("data file not found", where=str(p), hint="check data.path / data.sources")
    return [p]


def plan_sources(data: PTDataConfig) -> list[Source]:
    """The sources to mix: `data.sources`, or `data.path` as a single source."""
    if data.sources and data.path:
        raise ConfigError("give data.path or data.sources, not both", where="data")
    if data.sources:
        mixing.check_sources(data.sources)
        return data.sources
    if not data.path:
        raise ConfigError("no training data", where="data", hint="set data.path (files or folders) or data.sources")
    return [Source(path=",".join(data.path), name="data")]


def _paths(source: Source) -> list[Path]:
    return [f for part in source.path.split(",") if part.strip() for f in source_files(part.strip())]


def check_data(cfg: PTConfig, sources: list[Source]) -> list[dict]:
    """Read every file once (constant memory) before any model is loaded: the first bad record stops the run.
    Returns fingerprints with document counts."""
    if cfg.data.streaming and 0 < cfg.data.val_size < 1 and not cfg.data.val_path:
        raise ConfigError("streaming needs data.val_size as a number of documents (e.g. 200), not a share",
                          where="data.val_size")
    if cfg.data.streaming and cfg.train.max_steps <= 0:
        raise ConfigError("streaming needs train.max_steps: the corpus length is not known in advance",
                          where="train.max_steps", hint="set train.max_steps, or data.streaming=false")
    prints = []
    files = [(f, s.text_mode or cfg.data.text_mode) for s in sources for f in _paths(s)]
    files += [(f, cfg.data.text_mode) for v in cfg.data.val_path for f in source_files(v)]
    for f, mode in files:
        docs = sum(1 for _ in formats.iter_texts(f, mode))
        prints.append({**formats.fingerprint(f), "documents": docs})
    return prints


def document_texts(source: Source, data: PTDataConfig) -> Iterator[str]:
    """The documents of a source in file order, cut at `max_samples`."""
    mode = source.text_mode or data.text_mode
    texts = itertools.chain.from_iterable(formats.iter_texts(f, mode) for f in _paths(source))
    return itertools.islice(texts, data.max_samples) if data.max_samples else texts


@dataclass
class CorpusPlan:
    """What the stage trains on: a mixer over the sources, the held-out rows, and a row factory."""

    mixer: mixing.Mixer
    val_rows: list
    rows: Callable[[], Iterable[dict]] | list
    stats: dict
    tally: dict


def plan_corpus(cfg: PTConfig, sources: list[Source], tokenizer) -> CorpusPlan:
    """Mix, tokenise, hold out and pack the documents. In memory: every document is tokenised once and rows
    are a list. Streaming: rows come from a generator that reads the files again on every pass."""
    data, seed = cfg.data, cfg.train.seed
    stats: dict = {"documents_split": 0}
    tally = {"examples": [0] * len(sources), "tokens": [0] * len(sources)}

    if data.streaming:
        def stream_of(k: int):
            return lambda pass_no: ((k, ids) for ids in tokenize(document_texts(sources[k], data), tokenizer))
    else:
        loaded = [list(tokenize(document_texts(s, data), tokenizer)) for s in sources]

        def stream_of(k: int):
            shuffle = mixing.shuffled(loaded[k], seed + k)
            return lambda pass_no: ((k, ids) for ids in shuffle(pass_no))

    mixer = mixing.Mixer(sources, [stream_of(k) for k in range(len(sources))], unit=_unit(data.mix_by),
                         total=data.mix_total, size=lambda item: len(item[1]))
    if not data.streaming:
        for k, docs in enumerate(loaded):
            if not docs:
                raise MedtuneError(f"data source '{mixing.source_label(sources[k])}' has no documents")

    n_val, val_docs = 0, []
    if data.val_path:
        val_files = [f for v in data.val_path for f in source_files(v)]
        val_docs = [ids for f in val_files for ids in tokenize(formats.iter_texts(f, data.text_mode), tokenizer)]

    if not data.streaming:
        mixed = list(mixer)
        if not data.val_path and data.val_size:
            n_val = int(data.val_size) if data.val_size >= 1 else max(1, round(len(mixed) * data.val_size))
            if n_val >= len(mixed):
                raise ConfigError(f"data.val_size={data.val_size} leaves no training documents", where="data.val_size")
        train, val, stats["held_out_copies_removed"] = mixing.hold_out(mixed, n_val, key=lambda x: tuple(x[1]))
        val_docs = val_docs or [ids for _, ids in val]
        for k, ids in train:
            tally["examples"][k] += 1
            tally["tokens"][k] += len(ids)
        stats["train_documents"] = len(train)
        stats["train_tokens"] = sum(len(ids) for _, ids in train)
        rows = list(build_rows((ids for _, ids in train), data.block_size, data.packing, seed=seed, stats=stats))
        if not rows:
            raise MedtuneError("no training rows: every document is shorter than 2 tokens")
    else:
        if not data.val_path and data.val_size:
            n_val = int(data.val_size)
            val_docs = [ids for _, ids in itertools.islice(iter(mixer), n_val)]
        held = {hash(tuple(ids)) for ids in val_docs} if n_val else set()

        def rows() -> Iterator[dict]:
            def train_docs():
                for _ in itertools.count():  # cycle through the mixture: the Trainer stops at max_steps
                    for k, ids in itertools.islice(iter(mixer), n_val, None):
                        if held and hash(tuple(ids)) in held:  # an up-sampled copy of a held-out document
                            continue
                        tally["examples"][k] += 1
                        tally["tokens"][k] += len(ids)
                        yield ids

            return build_rows(train_docs(), data.block_size, data.packing, window=data.buffer_docs, seed=seed, stats=stats)

    val_rows = list(build_rows(val_docs, data.block_size, data.packing, seed=seed)) if val_docs else []
    stats["val_documents"] = len(val_docs)
    return CorpusPlan(mixer=mixer, val_rows=val_rows, rows=rows, stats=stats, tally=tally)


def validate(cfg: PTConfig) -> list[str]:
    """`medtune validate`: check sources and read every file once; lines to print."""
    sources = plan_sources(cfg.data)
    lines = []
    for fp in check_data(cfg, sources):
        lines.append(f"data ok: {fp['path']}: {fp['documents']} documents")
    return lines


def _unit(mix_by: str) -> str:
    return "tokens" if mix_by == "tokens" else "examples"


def _row_dataset(make_rows: Callable[[], Iterable[dict]]):
    import torch

    class RowStream(torch.utils.data.IterableDataset):
        """Rows made on the fly; every iteration starts the stream again from the start."""

        def __iter__(self):
            return iter(make_rows())

    return RowStream()


# --------------------------------------------------------------------------------------------- train


def extend_vocabulary(cfg: PTConfig, sources: list[Source], model, tokenizer) -> dict:
    """Add the recipe's words and the corpus's most frequent split words as tokens. Returns a record."""
    from medtune.data import resolve_path, vocab

    words: list[str] = vocab.read_word_list(resolve_path(cfg.vocab.words)) if cfg.vocab.words else []
    found = []
    if cfg.vocab.add_missing:
        texts = itertools.chain.from_iterable(
            itertools.islice(document_texts(s, cfg.data), cfg.vocab.scan_documents) for s in sources)
        found = vocab.missing_words(texts, tokenizer, top=cfg.vocab.add_missing, min_count=cfg.vocab.min_count)
        words += [w for w, _, _ in found if w not in words]
    if not words:
        return {}
    ids, skipped = vocab.extend(model, tokenizer, words)
    print(f"vocabulary: added {len(ids)} tokens ({len(skipped)} skipped: already one token or not matchable)")
    return {"added": len(ids), "new_token_ids": ids, "skipped": skipped[:50],
            "words": [tokenizer.convert_ids_to_tokens(i) for i in ids][:200]}


@runs.replaces_on_success
def run(cfg: PTConfig, callbacks=None) -> Path:
    """Train per `cfg`; returns the run folder. `callbacks` are extra transformers TrainerCallbacks."""
    from medtune import models

    started = time.time()
    run_dir, previous, checkpoint = runs.start(cfg.output_dir, resume=cfg.resume, overwrite=cfg.overwrite)
    sources = plan_sources(cfg.data)
    fingerprints = check_data(cfg, sources)
    runs.refuse_changed_data(run_dir, previous, checkpoint, fingerprints)
    loaded, _ = models.load_for_training(cfg.model, cfg.lora.method, cfg.train.seed, template=False)
    model, tokenizer = loaded.model, loaded.tokenizer
    if tokenizer.eos_token_id is None:
        raise MedtuneError("the tokenizer has no EOS token to separate documents", where=cfg.model.name_or_path)
    vocab_record = extend_vocabulary(cfg, sources, model, tokenizer)
    if cfg.data.packing == "documents" and not packing.packing_supported(model):
        print("note: this model does not keep packed documents apart; training on one document per row instead")
        cfg = _with_packing(cfg, "none")
    mode = cfg.data.packing

    corpus = plan_corpus(cfg, sources, tokenizer)
    # only now, with model and data known good, empty (overwrite=true) and create the run folder
    run_dir = runs.prepare(cfg.output_dir, resume=cfg.resume, overwrite=cfg.overwrite)
    collator = packing.Collator(tokenizer.pad_token_id, attention_mask=mode == "none")

    model.config.use_cache = False
    model = models.apply_lora(model, cfg.lora, gradient_checkpointing=cfg.train.gradient_checkpointing,
                              trainable_tokens=vocab_record.get("new_token_ids"))
    manifest = common.manifest("pt", cfg, previous, loaded, None, fingerprints, corpus.stats, packing=mode,
                               vocabulary=vocab_record, parameters=common.parameter_counts(model))
    common.begin(run_dir, manifest, checkpoint, resume=cfg.resume)

    train_data = corpus.rows if isinstance(corpus.rows, list) else _row_dataset(corpus.rows)
    if isinstance(corpus.rows, list):
        corpus.stats["train_rows"] = len(corpus.rows)
    trainer = _trainer_class()(
        model=model,
        args=common.training_arguments(cfg.train, run_dir, bool(corpus.val_rows)),
        train_dataset=train_data,
        eval_dataset=corpus.val_rows or None,
        data_collator=collator,
        callbacks=list(callbacks or []),
    )
    metrics = common.train(trainer, run_dir, manifest, checkpoint, started)
    if corpus.val_rows:
        metrics["eval_loss"] = trainer.evaluate()["eval_loss"]
        metrics["eval_perplexity"] = math.exp(min(metrics["eval_loss"], 50))
        first = [h["eval_loss"] for h in trainer.state.log_history if "eval_loss" in h]
        if first and trainer.args.eval_on_start:
            metrics["eval_loss_before"] = first[0]
            metrics["eval_perplexity_before"] = math.exp(min(first[0], 50))
    history = [
        {k: h[k] for k in ("step", "loss", "eval_loss", "eval_perplexity", "learning_rate", "grad_norm") if k in h}
        for h in trainer.state.log_history
    ]
    common.finish(run_dir, manifest, trainer.model, tokenizer, keep_checkpoints=cfg.train.keep_checkpoints,
                  summary=lambda: _summary(run_dir, manifest, collator), metrics=metrics, history=history,
                  mixture=corpus.mixer.report(corpus.tally["examples"], corpus.tally["tokens"]))
    return run_dir


def _with_packing(cfg: PTConfig, mode: str) -> PTConfig:
    import dataclasses

    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, packing=mode))


def _trainer_class():
    from transformers import Trainer

    class PTTrainer(Trainer):
        def log(self, logs, *args, **kwargs):  # held-out perplexity beside the loss, in logs and TensorBoard
            if "eval_loss" in logs:
                logs["eval_perplexity"] = math.exp(min(logs["eval_loss"], 50))
            super().log(logs, *args, **kwargs)

    return PTTrainer


def _summary(run_dir: Path, manifest: dict, collator) -> None:
    s, m = manifest["data_stats"], manifest["metrics"]
    losses = [h["loss"] for h in manifest["history"] if "loss" in h]
    print(f"\npt finished in {m['train_runtime_s']} s, {m['steps']} steps ({manifest['packing']} packing)")
    print("  mixture achieved (training documents):")
    for line in mixing.format_report(manifest["mixture"]).splitlines():
        print("    " + line)
    print(f"  held out: {s['val_documents']} documents; {s['documents_split']} documents longer than block_size were cut")
    if collator.padded_tokens:
        print(f"  padding: {1 - collator.real_tokens / collator.padded_tokens:.1%} of batch tokens")
    if losses:
        line = f"  train loss: {losses[0]:.3f} -> {losses[-1]:.3f}"
        if "eval_perplexity_before" in m:
            line += f"; held-out perplexity {m['eval_perplexity_before']:.2f} -> {m['eval_perplexity']:.2f}"
        elif "eval_perplexity" in m:
            line += f"; held-out perplexity {m['eval_perplexity']:.2f}"
        print(line)
    if manifest.get("vocabulary"):
        print(f"  vocabulary: {manifest['vocabulary']['added']} new tokens trained")
    kind = "LoRA adapter" if manifest["adapter"] else "full weights"
    print(f"  wrote {kind}, tokenizer and medtune.json to {run_dir}; TensorBoard logs in {run_dir / 'logs'}")
    print(f"  next: medtune sft RECIPE model.name_or_path={run_dir}")
