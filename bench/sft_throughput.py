#!/usr/bin/env python
"""SFT throughput on CPU: medtune's packed path against a MedicalGPT-style padded baseline.

Useful tokens/s = real (non-pad) input tokens processed / training time after the first (warm-up) step.
Every configuration trains once over the same examples (the first N of the data after a seeded shuffle
that fit --max-length), tokenised and labelled by medtune's chat template, with the same seeds and the same
HF `Trainer`, so optimiser and scheduler overheads are identical:

  baseline   MedicalGPT's recipe: one example per row, padded per batch (DataCollatorForSeq2Seq, right
             padding, labels padded with -100, pad_to_multiple_of=4), bf16 autocast, gradient checkpointing
             (+ enable_input_require_grads), per_device_train_batch_size 4, random order; LoRA r 16,
             alpha 32, dropout 0.05, all linear layers.
  medtune    what `medtune sft` does with its defaults, read from the code: packing.pack rows of max_length +
             packing.Collator, no checkpointing, bf16 per bf16_wanted(TrainConfig().bf16), batch_size =
             TrainConfig().batch_size rows, LoraConfig() defaults, and sft.label_logits_loss where
             sft.label_logits_supported says so.
  rR-DT[-lab][-nodrop][-bB]  variants of medtune's packed path with MedicalGPT's LoRA: rows of R tokens,
             DT = fp32 or bf16 (autocast), B rows per batch (default: R*B = 4 * max_length tokens per step);
             `-lab`: logits only where a label is trained (skips the 49152-wide LM head on prompt tokens);
             `-nodrop`: LoRA dropout 0.

MFU = model FLOPs / time / peak, with model FLOPs = 4 * N * tokens for LoRA (forward 2N + backward 2N for
activation gradients; frozen weights get no weight gradients; the adapters' own FLOPs and attention are
ignored; 6N would be full fine-tuning) and peak = the best of the fp32/bf16 2048^3 matmul rates measured
in the same run. N counts the tied embedding once (as the LM head).

    python bench/sft_throughput.py                        # ~10 min on a 2-core CPU
    python bench/sft_throughput.py --configs all          # the whole variant grid (longer)
    python bench/sft_throughput.py --model PATH --examples 8 --steps 2   # smoke run

Prints only; writes nothing outside a temporary folder.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import math
import os
import platform
import random
import re
import sys
import tempfile
import threading
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DEFAULT_DATA = [SHARED / "chatdoctor" / "genmedgpt5k.json", SHARED / "medicalgpt" / "medical_sft_1K_format.jsonl"]
DEFAULT_CONFIGS = "baseline,medtune,r1024-bf16,r1024-fp32,r512-fp32-lab-nodrop"
ALL_CONFIGS = ("baseline,medtune,r1024-bf16,r1024-fp32,r512-bf16,r512-fp32,r2048-bf16,r2048-fp32,r1024-fp32-lab,"
               "r1024-fp32-nodrop,r1024-fp32-lab-nodrop,r512-fp32-lab-nodrop,r2048-fp32-lab-nodrop,"
               "r1024-fp32-lab-nodrop-b1,r512-fp32-lab-nodrop-b2")
SEED = 42
CONTENDED = 0.85  # CPU share below this: another process took the CPU during the measurement
LR = 2e-4


@dataclasses.dataclass
class Spec:
    name: str
    packed: bool
    rows: int  # packed row length (0: one example per row)
    batch: int
    bf16: bool
    checkpointing: bool
    labels_only: bool | None = False  # None: as `medtune sft` decides (sft.label_logits_supported)
    lora_dropout: float | None = 0.05  # None: medtune's own LoraConfig() defaults (r, alpha, dropout, targets)


@dataclasses.dataclass
class Result:
    spec: Spec
    steps: int = 0
    tokens: int = 0  # real tokens after step 1
    seconds: float = 0.0  # time after step 1
    all_tokens: int = 0
    padded: int = 0  # batch tokens including padding, all steps
    loss: float = float("nan")  # label-token-weighted mean training loss, all steps
    first_loss: float = float("nan")
    peak_rss_gb: float = 0.0
    wall: float = 0.0
    cpu_share: float = float("nan")  # process CPU time / (time * threads) after step 1: < ~0.95 = contended

    @property
    def tps(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else float("nan")


def parse_spec(name: str, max_length: int, default_batch: int, default_bf16: bool) -> Spec:
    if name == "baseline":
        return Spec(name, packed=False, rows=0, batch=4, bf16=True, checkpointing=True)
    if name == "medtune":
        return Spec(name, packed=True, rows=max_length, batch=default_batch, bf16=default_bf16, checkpointing=False,
                    labels_only=None, lora_dropout=None)
    m = re.fullmatch(r"r(\d+)-(fp32|bf16)(-lab)?(-nodrop)?(?:-b(\d+))?", name)
    if not m:
        raise SystemExit(f"unknown config '{name}' (baseline, medtune or rROWS-fp32|bf16[-lab][-nodrop][-bBATCH])")
    rows = int(m.group(1))
    batch = int(m.group(5)) if m.group(5) else max(1, default_batch * max_length // rows)
    return Spec(name, packed=True, rows=rows, batch=batch, bf16=m.group(2) == "bf16", checkpointing=False,
                labels_only=bool(m.group(3)), lora_dropout=0.0 if m.group(4) else 0.05)


# ------------------------------------------------------------------------------------------ machine


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def ram_gb() -> float:
    try:
        for line in open("/proc/meminfo", encoding="utf-8"):
            if line.startswith("MemTotal"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("nan")


def matmul_peak(dtype, n: int = 2048, seconds: float = 2.0) -> float:
    """FLOP/s of an n x n x n matmul in `dtype` (2 n^3 FLOPs each), best of a few timed bursts."""
    import torch

    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    for _ in range(2):
        a @ b
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        for _ in range(3):
            a @ b
        best = max(best, 3 * 2 * n**3 / (time.perf_counter() - t))
    return best


class RSSPeak:
    """Samples this process's resident memory in a thread; `peak` in bytes since `reset()`."""

    def __init__(self, every: float = 0.05):
        self.every, self.peak, self._stop = every, 0, threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _rss(self) -> int:
        try:
            with open("/proc/self/statm", encoding="ascii") as f:
                return int(f.read().split()[1]) * self._page
        except OSError:
            return 0

    def _run(self):
        while not self._stop.wait(self.every):
            self.peak = max(self.peak, self._rss())

    def reset(self):
        self.peak = self._rss()


def torch_no_grad_lazy(fn):
    def wrapper(*a, **kw):
        import torch

        with torch.no_grad():
            return fn(*a, **kw)

    return wrapper


def _load() -> str:
    try:
        return " ".join(open("/proc/loadavg", encoding="ascii").read().split()[:3])
    except OSError:
        return "?"


# --------------------------------------------------------------------------------------------- data


def pick_data(arg: str | None) -> Path | None:
    if arg:
        return Path(arg)
    for p in DEFAULT_DATA:
        if p.is_file():
            return p
    return None


def select_examples(path: Path, tokenizer, fmt, n: int, max_length: int) -> tuple[list[dict], int, int]:
    """The first `n` examples (after a seeded shuffle of the dialogues) that fit `max_length`, encoded as
    `medtune sft` encodes them. Returns (examples, dialogues read, dropped as too long)."""
    from medtune.data import formats
    from medtune.stages import sft

    dialogues = formats.load_dialogues(path)
    random.Random(0).shuffle(dialogues)
    data_cfg = sft.DataConfig(path=[str(path)], max_length=max_length, truncation="drop")
    stats = {"dropped_too_long": 0, "truncated_to_whole_turns": 0, "dropped_no_target": 0}
    out, read = [], 0
    for d in dialogues:
        if len(out) >= n:
            break
        out.extend(sft.encode_examples([d], tokenizer, fmt, data_cfg, stats))
        read += 1
    return out, read, stats["dropped_too_long"]


class Counting:
    """Wraps a collator: adds `num_real_tokens` (non-pad input tokens of the batch) and counts padding."""

    def __init__(self, inner):
        self.inner, self.padded = inner, 0

    def __call__(self, features):
        batch = self.inner(features)
        import torch

        batch["num_real_tokens"] = torch.tensor(sum(len(f["input_ids"]) for f in features))
        self.padded += batch["input_ids"].numel()
        return batch


# ------------------------------------------------------------------------------------------ training


def make_trainer_class():
    import torch.nn.functional as F
    from transformers import Trainer, TrainerCallback

    class Timer(TrainerCallback):
        def __init__(self):
            self.begin, self.ends, self.cpu = None, [], []

        def on_train_begin(self, args, state, control, **kw):
            self.begin = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            self.ends.append(time.perf_counter())
            self.cpu.append(time.process_time())

    class BenchTrainer(Trainer):
        labels_only = False

        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.real_tokens, self.losses, self.label_counts = [], [], []

        def training_step(self, model, inputs, num_items_in_batch=None):
            self.real_tokens.append(int(inputs.pop("num_real_tokens")))
            self.label_counts.append(int((inputs["labels"][:, 1:] != -100).sum()))
            loss = super().training_step(model, inputs, num_items_in_batch)
            self.losses.append(float(loss))
            return loss

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if not self.labels_only:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            from medtune.stages import sft

            if hasattr(sft, "label_logits_loss"):  # medtune's own, where it has one
                loss = sft.label_logits_loss(model, inputs, num_items_in_batch)
                return (loss, None) if return_outputs else loss
            # Prototype: run the decoder, then the LM head only where the next token is a trained label.
            base = model.get_base_model() if hasattr(model, "get_base_model") else model
            labels = inputs["labels"]
            hidden = base.get_decoder()(
                input_ids=inputs["input_ids"], position_ids=inputs.get("position_ids"),
                attention_mask=inputs.get("attention_mask"), use_cache=False,
            ).last_hidden_state
            targets = labels[:, 1:]
            keep = targets != -100
            logits = base.get_output_embeddings()(hidden[:, :-1][keep]).float()
            loss = F.cross_entropy(logits, targets[keep], reduction="sum")
            n = num_items_in_batch if num_items_in_batch is not None else keep.sum()
            loss = loss / n
            return (loss, None) if return_outputs else loss

    return BenchTrainer, Timer


def run_one(spec: Spec, examples: list[dict], model_spec: str, tokenizer, fmt, max_steps_cap: int,
            rss: RSSPeak) -> Result:
    import torch
    from transformers import DataCollatorForSeq2Seq, TrainingArguments
    from transformers.trainer_callback import PrinterCallback

    from medtune import models
    from medtune.data import packing

    BenchTrainer, Timer = make_trainer_class()
    started = time.perf_counter()
    loaded = models.load(models.ModelConfig(name_or_path=model_spec), device="cpu")
    model = loaded.model
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))
    model.config.use_cache = False
    torch.manual_seed(SEED)  # identical LoRA initialisation for every configuration
    if spec.lora_dropout is None:
        lora = models.LoraConfig()  # medtune's defaults
        spec = dataclasses.replace(spec, lora_dropout=lora.dropout)
    else:  # MedicalGPT's: r 16, alpha 32, all linear layers
        lora = models.LoraConfig(r=16, alpha=32, dropout=spec.lora_dropout, target_modules=["all-linear"])
    model = models.apply_lora(model, lora, gradient_checkpointing=spec.checkpointing)

    if spec.packed:
        rows = packing.pack(examples, spec.rows, seed=SEED)
        inner = packing.Collator(tokenizer.pad_token_id, attention_mask=False)
        if spec.labels_only is None:  # what `medtune sft` does on this model
            from medtune.stages import sft

            check = getattr(sft, "label_logits_supported", None)
            spec = dataclasses.replace(spec, labels_only=bool(check and check(model, inner)))
        collator = Counting(inner)
    else:
        # MedicalGPT: gradient_checkpointing_enable + enable_input_require_grads, DataCollatorForSeq2Seq
        rows = [{"input_ids": e["input_ids"], "attention_mask": [1] * len(e["input_ids"]), "labels": e["labels"]}
                for e in examples]
        tokenizer.padding_side = "right"
        model.enable_input_require_grads()
        collator = Counting(DataCollatorForSeq2Seq(tokenizer=tokenizer, model=model, label_pad_token_id=-100,
                                                   pad_to_multiple_of=4, return_tensors="pt"))
    steps = math.ceil(len(rows) / spec.batch)
    if max_steps_cap:
        steps = min(steps, max_steps_cap)
    timer = Timer()
    with tempfile.TemporaryDirectory(prefix="medtune-bench-") as tmp:
        args = TrainingArguments(
            output_dir=tmp, per_device_train_batch_size=spec.batch, gradient_accumulation_steps=1,
            max_steps=steps, learning_rate=LR, warmup_steps=0.03, lr_scheduler_type="cosine",
            weight_decay=0.0, max_grad_norm=1.0, bf16=spec.bf16, activation_checkpointing=spec.checkpointing,
            logging_strategy="no", save_strategy="no", eval_strategy="no", seed=SEED, data_seed=SEED,
            use_cpu=True, report_to=[], remove_unused_columns=False, dataloader_num_workers=0,
            disable_tqdm=True, use_cache=False,
        )
        trainer = BenchTrainer(model=model, args=args, train_dataset=rows, data_collator=collator,
                               callbacks=[timer])
        trainer.labels_only = spec.labels_only
        trainer.remove_callback(PrinterCallback)
        gc.collect()
        _trim()
        rss.reset()
        trainer.train()
    r = Result(spec)
    r.steps = len(timer.ends)
    r.all_tokens = sum(trainer.real_tokens)
    r.padded = collator.padded
    if r.steps >= 2:
        r.tokens = sum(trainer.real_tokens[1:])
        r.seconds = timer.ends[-1] - timer.ends[0]
        r.cpu_share = (timer.cpu[-1] - timer.cpu[0]) / (r.seconds * torch.get_num_threads())
    w = sum(trainer.label_counts)
    if w:
        r.loss = sum(l * c for l, c in zip(trainer.losses, trainer.label_counts)) / w
    r.first_loss = trainer.losses[0] if trainer.losses else float("nan")
    r.peak_rss_gb = rss.peak / 2**30
    r.wall = time.perf_counter() - started
    del trainer, model, loaded
    gc.collect()
    _trim()
    return r


def _trim():
    """Hand freed heap back to the OS so the next configuration's peak RSS starts from a clean slate."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


@torch_no_grad_lazy
def initial_loss_check(examples: list[dict], model_spec: str, tokenizer, max_length: int) -> tuple[float, float]:
    """Token-mean loss of the untrained model (fp32, eval) over `examples`, batched as the baseline does
    (padded rows + attention mask) and as medtune does (packed rows, block-diagonal by position ids)."""
    from transformers import DataCollatorForSeq2Seq

    from medtune import models
    from medtune.data import packing

    model = models.load(models.ModelConfig(name_or_path=model_spec), device="cpu").model.eval()
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))

    def total(batches):
        loss_sum, n_sum = 0.0, 0
        for batch in batches:
            n = int((batch["labels"][:, 1:] != -100).sum())
            loss = model(**batch, use_cache=False, num_items_in_batch=n).loss
            loss_sum, n_sum = loss_sum + float(loss) * n, n_sum + n
        return loss_sum / n_sum

    tokenizer.padding_side = "right"
    pad = DataCollatorForSeq2Seq(tokenizer=tokenizer, label_pad_token_id=-100, pad_to_multiple_of=4)
    feats = [{"input_ids": e["input_ids"], "attention_mask": [1] * len(e["input_ids"]), "labels": e["labels"]}
             for e in examples]
    padded = total(pad(feats[i:i + 4]) for i in range(0, len(feats), 4))
    rows = packing.pack(examples, max_length, seed=SEED)
    col = packing.Collator(tokenizer.pad_token_id, attention_mask=False)
    packed = total(col(rows[i:i + 4]) for i in range(0, len(rows), 4))
    return padded, packed


# ---------------------------------------------------------------------------------------------- main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--examples", type=int, default=64, help="examples per configuration (default 64)")
    ap.add_argument("--max-length", type=int, default=1024, help="longest example; medtune's row length")
    ap.add_argument("--data", help="SFT data file (default: ChatDoctor GenMedGPT-5k, else MedicalGPT SFT 1K)")
    ap.add_argument("--model", default="default", help="model spec as for `medtune sft` (default: default)")
    ap.add_argument("--configs", default=DEFAULT_CONFIGS,
                    help=f"comma list, or `all` ({ALL_CONFIGS}); default {DEFAULT_CONFIGS}")
    ap.add_argument("--steps", type=int, default=0, help="cap optimizer steps per configuration (smoke runs)")
    ap.add_argument("--json", action="store_true", help="also print the results as one JSON line")
    args = ap.parse_args(argv)

    data = pick_data(args.data)
    if data is None or not data.is_file():
        where = args.data or f"{SHARED} (shared data)"
        print(f"skipped: no SFT data at {where}; pass --data FILE")
        return 0

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import peft
    import torch
    import transformers

    from medtune import models
    from medtune.data import templates
    from medtune.stages import common, sft

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    t0 = time.perf_counter()
    recipe = sft.TrainConfig()
    default_bf16 = common.bf16_wanted(recipe.bf16)
    names = (ALL_CONFIGS if args.configs == "all" else args.configs).split(",")
    specs = [parse_spec(n.strip(), args.max_length, recipe.batch_size, default_bf16) for n in names if n.strip()]

    loaded = models.load(models.ModelConfig(name_or_path=args.model), device="cpu")
    tokenizer = loaded.tokenizer
    fmt = templates.resolve_format(tokenizer, "auto")
    templates.install_format(tokenizer, fmt)
    n_params = sum(p.numel() for p in loaded.model.parameters())
    del loaded
    examples, read, dropped = select_examples(data, tokenizer, fmt, args.examples, args.max_length)
    if not examples:
        print(f"skipped: no example of {data} fits --max-length {args.max_length}")
        return 0
    longest = max(len(e["input_ids"]) for e in examples)
    n_tokens = sum(len(e["input_ids"]) for e in examples)
    n_labels = sum(sum(t != -100 for t in e["labels"][1:]) for e in examples)

    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, {ram_gb():.0f} GiB RAM; torch {torch.__version__} "
          f"({torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()}), transformers "
          f"{transformers.__version__}, peft {peft.__version__}")
    peak32 = matmul_peak(torch.float32)
    peak16 = matmul_peak(torch.bfloat16)
    peak = max(peak32, peak16)
    print(f"matmul 2048^3: fp32 {peak32 / 1e9:.0f} GFLOP/s, bf16 {peak16 / 1e9:.0f} GFLOP/s")
    print(f"model: {args.model} ({n_params / 1e6:.1f} M params); data: {data.name}: {len(examples)} examples "
          f"(read {read} after a seeded shuffle, dropped {dropped} > {args.max_length} tokens), {n_tokens} tokens, "
          f"{n_labels} trained ({n_labels / n_tokens:.0%}), longest {longest}")
    print(f"medtune recipe defaults: batch_size {recipe.batch_size} rows of max_length {args.max_length}, "
          f"bf16 {recipe.bf16} -> {default_bf16}, gradient_checkpointing {recipe.gradient_checkpointing}\n",
          flush=True)

    check = examples[:16]
    padded_loss, packed_loss = initial_loss_check(check, args.model, tokenizer, args.max_length)
    print(f"loss check (untrained model, fp32, first {len(check)} examples): padded + attention mask "
          f"{padded_loss:.5f}, packed {packed_loss:.5f} (difference {abs(padded_loss - packed_loss):.1e})")
    print(f"load average before: {_load()}")
    rss = RSSPeak()
    results: list[Result] = []
    for spec in specs:
        if spec.packed and spec.rows < longest:
            print(f"{spec.name}: skipped (rows of {spec.rows} < longest example {longest})")
            continue
        r = run_one(spec, examples, args.model, tokenizer, fmt, args.steps, rss)
        results.append(r)
        print(f"  {spec.name}: {r.steps} steps, {r.tps:.0f} tok/s, loss {r.loss:.4f}, peak RSS "
              f"{r.peak_rss_gb:.1f} GiB, CPU share {r.cpu_share:.0%}, {r.wall:.0f} s; load {_load()}", flush=True)

    base = next((r for r in results if r.spec.name == "baseline"), None)
    print("\n| config | rows x batch | precision | ckpt | LoRA dropout | steps | pad % | useful tok/s | vs baseline "
          "| MFU | mean loss | first-step loss | peak RSS GiB | CPU share |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        s = r.spec
        shape = f"{s.rows} x {s.batch}" if s.packed else f"padded x {s.batch}"
        prec = ("bf16" if s.bf16 else "fp32") + (" +lab" if s.labels_only else "")
        pad = 1 - r.all_tokens / r.padded if r.padded else 0.0
        mfu = 4 * n_params * r.tps / peak
        ratio = f"{r.tps / base.tps:.2f}x" if base and base.tps == base.tps and base.tps else "-"
        drop = s.lora_dropout
        print(f"| {s.name} | {shape} | {prec} | {'on' if s.checkpointing else 'off'} | {drop:g} | {r.steps} | "
              f"{pad:.1%} | {r.tps:.0f} | {ratio} | {mfu:.1%} | {r.loss:.4f} | {r.first_loss:.4f} | "
              f"{r.peak_rss_gb:.1f} | {r.cpu_share:.0%}{' (contended)' if r.cpu_share < CONTENDED else ''} |")
    if any(r.cpu_share < CONTENDED for r in results):
        print(f"\nwarning: CPU share below {CONTENDED:.0%} means other processes took the CPU during that "
              "configuration: its tokens/s is too low; run again when `uptime` shows a low load")
    med = next((r for r in results if r.spec.name == "medtune"), None)
    if base and med:
        print(f"\nmedtune (recipe defaults) / baseline useful tokens/s: {med.tps / base.tps:.2f}x")
    best = max(results, key=lambda r: r.tps if r.tps == r.tps else -1, default=None)
    if base and best:
        print(f"fastest: {best.spec.name} at {best.tps / base.tps:.2f}x baseline")
    print(f"MFU = 4 * {n_params / 1e6:.1f}M params * tok/s / {peak / 1e9:.0f} GFLOP/s (best measured matmul rate); "
          f"loss = label-token-weighted mean over all steps; CPU share = process CPU time / (time x "
          f"{torch.get_num_threads()} threads) after step 1; "
          f"total {time.perf_counter() - t0:.0f} s")
    if args.json:
        print(json.dumps({"peak_fp32": peak32, "peak_bf16": peak16, "params": n_params,
                          "loss_check": {"padded": padded_loss, "packed": packed_loss},
                          "results": [{**dataclasses.asdict(r.spec), "tps": r.tps, "loss": r.loss,
                                       "first_loss": r.first_loss, "steps": r.steps, "tokens": r.tokens,
                                       "seconds": r.seconds, "peak_rss_gb": r.peak_rss_gb,
                                       "cpu_share": r.cpu_share} for r in results]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
