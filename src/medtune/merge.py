"""`medtune merge`: fold a LoRA run into full weights, average two checkpoints, make model soups, and sweep
the averaging weight to trade domain skill against general ability. Guide: docs/merge.md.

Reads top to bottom: output folders (temporary folder, renamed at the end) -> reading safetensors weights one
tensor at a time -> the streamed weighted sum every method shares (tied weights, shards) -> `merge_lora` ->
`average` -> `soup` and `greedy_soup` -> `sweep` (evaluate each alpha, choose by a stated rule, plot) -> `cli`.

Averages and soups never hold whole models: each output tensor is read from every input in turn, summed in
float32, cast back to its dtype and queued into the pending output shard, which is written once it passes
`shard_bytes`. Peak memory is about one shard plus a few float32 copies of the largest tensor.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import shutil
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Callable

from medtune import models, runs
from medtune.config import CommandParser, float_option, int_option
from medtune.errors import MedtuneError

SHARD_BYTES = 2 * 1024**3  # an output shard is written once the pending tensors pass this (bytes)
DEFAULT_ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)
INDEX = "model.safetensors.index.json"

# files of a model folder that are not copied beside averaged weights (weights, run records, model cards)
_NOT_COPIED_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".ckpt", ".h5", ".msgpack", ".onnx",
                        ".index.json")
_NOT_COPIED = {runs.MANIFEST, "adapter_config.json", "README.md", "trainer_state.json"}

# an output head that may be stored only as its tied input embedding
_OUTPUT_HEADS = ("lm_head.weight", "embed_out.weight")
_INPUT_EMBEDDINGS = ("embed_tokens.weight", "wte.weight", "word_embeddings.weight", "tok_embeddings.weight",
                     "embed_in.weight")

# a decoder layer's index inside a tensor name: model.layers.7., transformer.h.7., gpt_neox.layers.7., blocks.7.
_LAYER = re.compile(r"(?:^|\.)(?:layers|layer|h|blocks|block)\.(\d+)\.")
_UPPER_NAMES = ("lm_head", "embed_out", "output.")  # outside the layers: output side
_LOWER_NAMES = ("embed", "wte", "wpe", "word_embeddings", "tok_embeddings")  # outside the layers: input side

# ------------------------------------------------------------------------------------------ output folders


def _check_out(out: Path, overwrite: bool, inputs=()) -> None:
    """Refuse a file, an input folder, or an existing non-empty folder (unless overwrite)."""
    if out.exists() and not out.is_dir():
        raise MedtuneError("output path is a file, not a folder", where=str(out), hint="choose a new folder")
    resolved = out.resolve()
    for spec in inputs:
        p = Path(str(spec))
        if p.exists() and p.resolve() == resolved:
            raise MedtuneError("the output folder is one of the inputs", where=str(out), hint="choose a new folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise MedtuneError("output folder exists and is not empty", where=str(out),
                           hint="choose a new folder, or pass --overwrite to replace it")


@contextlib.contextmanager
def _atomic_folder(out, *, overwrite: bool = False, inputs=()):
    """Yield a temporary folder beside `out`; on success it becomes `out` (replacing it only with overwrite).
    On any failure the temporary folder is removed and `out` is left as it was."""
    out = Path(out)
    _check_out(out, overwrite, inputs)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = runs.temporary_folder(out.parent, f".{out.name}.")  # an ordinary folder once renamed
    old = None
    try:
        yield tmp
        runs.ordinary_modes(tmp)  # safetensors writes its shards owner-only
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
            os.replace(out, old / "previous")  # keep the old folder until the new one is in place
        try:
            os.replace(tmp, out)
        except BaseException:
            if old is not None:
                os.replace(old / "previous", out)
            raise
    finally:
        for leftover in (tmp, old):
            if leftover is not None and leftover.exists():
                shutil.rmtree(leftover, ignore_errors=True)


def _write_manifest(folder: Path, manifest: dict) -> None:
    runs.write_json(folder / runs.MANIFEST, {**manifest, "libraries": runs.library_versions(), "finished": runs.now()})


# --------------------------------------------------------------------------------------- reading weights


class _Weights:
    """The safetensors tensors of one model folder. Shapes and dtypes are read from the headers up front; `get`
    memory-maps the tensor's file only while it copies that one tensor out, so no mapped pages pile up."""

    def __init__(self, folder: Path, label: str):
        self.folder, self.label = Path(folder), label
        self.config = _read_config(self.folder)
        self.files = _weight_files(self.folder, label)  # tensor name -> file
        self.names = list(self.files)
        self._meta: dict[str, tuple[list[int], str]] = {}
        for path in dict.fromkeys(self.files.values()):
            with _open(path) as f:
                for name in f.keys():
                    piece = f.get_slice(name)
                    self._meta[name] = (list(piece.get_shape()), piece.get_dtype())

    def meta(self, name: str) -> tuple[list[int], str]:
        """(shape, safetensors dtype such as F32 or BF16)."""
        return self._meta[name]

    def get(self, name: str):
        with _open(self.files[name]) as f:
            return f.get_tensor(name)


def _open(path: Path):
    from safetensors import safe_open  # looked up on each call, so a test can watch the reads

    return safe_open(str(path), framework="pt")


def _read_config(folder: Path) -> dict:
    path = folder / "config.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MedtuneError(f"config.json is not valid JSON: {exc}", where=str(path)) from None


def _weight_files(folder: Path, label: str) -> dict[str, Path]:
    index = folder / INDEX
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise MedtuneError(f"unreadable shard index: {exc}", where=str(index)) from None
        files = {name: folder / file for name, file in weight_map.items()}
        missing = sorted({str(p) for p in files.values() if not p.is_file()})
        if missing:
            raise MedtuneError(f"a shard named in the index is missing: {missing[0]}", where=str(index))
        return files
    single = folder / "model.safetensors"
    if single.is_file():
        with _open(single) as f:
            return {name: single for name in f.keys()}
    if list(folder.glob("pytorch_model*.bin")):
        raise MedtuneError(f"{label} holds PyTorch .bin weights, not safetensors", where=str(folder),
                           hint="load and save it once with transformers (save_pretrained writes safetensors)")
    raise MedtuneError(f"{label} holds no model.safetensors or {INDEX}", where=str(folder),
                       hint="pass a Hugging Face model folder, or a medtune run folder")


def _tie_source(name: str, source: _Weights) -> str | None:
    """The input embedding a missing output head is tied to (stored once in safetensors), if any."""
    if not name.endswith(_OUTPUT_HEADS) and name != "output.weight":
        return None
    if source.config.get("tie_word_embeddings") is False:
        return None
    found = [n for n in source.names if n.endswith(_INPUT_EMBEDDINGS)]
    return found[0] if len(found) == 1 else None


def _materialise(spec, work: Path, label: str, *, trust_remote_code: bool = False) -> Path:
    """A local folder of full safetensors weights for `spec`: as is, or a LoRA run merged into `work`."""
    target = models.resolve(str(spec))
    if not Path(target).is_dir():
        raise MedtuneError(f"{label} must be a local folder to be averaged", where=str(spec),
                           hint=f"download it first: hf download {spec} --local-dir DIR")
    manifest = runs.read_manifest(target)
    if manifest and manifest.get("adapter"):
        return merge_lora(target, work / f"{label}-merged", trust_remote_code=trust_remote_code, quiet=True)
    return Path(target)


# ------------------------------------------------------------------------- the streamed weighted sum


class _ShardWriter:
    """Queue output tensors; write a shard whenever the queue would pass `max_bytes`; name and index at the end."""

    def __init__(self, folder: Path, max_bytes: int):
        self.folder, self.max_bytes = folder, max_bytes
        self.pending: dict = {}
        self.pending_bytes = 0
        self.parts: list[tuple[Path, list[str]]] = []
        self.total_bytes = 0

    def add(self, name: str, tensor) -> None:
        size = tensor.numel() * tensor.element_size()
        if self.pending and self.pending_bytes + size > self.max_bytes:
            self._flush()
        self.pending[name] = tensor.contiguous()
        self.pending_bytes += size
        self.total_bytes += size

    def _flush(self) -> None:
        from safetensors.torch import save_file

        part = self.folder / f".part-{len(self.parts) + 1:05d}.safetensors"
        save_file(self.pending, str(part), metadata={"format": "pt"})
        self.parts.append((part, list(self.pending)))
        self.pending, self.pending_bytes = {}, 0

    def finish(self) -> list[str]:
        """Write the last shard; name them model.safetensors, or model-0000k-of-0000n.safetensors + index."""
        if self.pending:
            self._flush()
        n = len(self.parts)
        if n == 1:
            os.replace(self.parts[0][0], self.folder / "model.safetensors")
            return ["model.safetensors"]
        weight_map, names = {}, []
        for k, (part, tensors) in enumerate(self.parts, 1):
            final = f"model-{k:05d}-of-{n:05d}.safetensors"
            os.replace(part, self.folder / final)
            names.append(final)
            weight_map.update(dict.fromkeys(tensors, final))
        runs.write_json(self.folder / INDEX, {"metadata": {"total_size": self.total_bytes}, "weight_map": weight_map})
        return names


def _combine(folders: list[Path], labels: list[str], coefficients: Callable[[str], list[float]], out: Path, *,
             ref: int, shard_bytes: int = SHARD_BYTES, quiet: bool = False) -> dict:
    """Write sum_i c_i * tensor_i for every tensor (c = coefficients(name), one per folder) into `out`, streamed.

    Tensor names and shapes must agree (the first disagreement is a MedtuneError naming the tensor); an output
    head missing from a folder is read from the embedding it is tied to. Sums are computed in float32 in folder
    order and cast back to the dtype of folder `ref`, whose config, tokenizer and other files are copied.
    Integer tensors (rare buffers) must be equal everywhere and are copied. Returns counts for the summary.
    """
    import torch
    from tqdm import tqdm

    sources = [_Weights(f, label) for f, label in zip(folders, labels)]
    _same_architecture(sources)
    plan = _plan(sources, ref)
    writer = _ShardWriter(out, shard_bytes)
    for name, picks in tqdm(plan, desc="merge", unit="tensor", file=sys.stderr, disable=quiet):
        weights = coefficients(name)
        dtype = _torch_dtype(sources[ref].meta(picks[ref])[1])
        if not dtype.is_floating_point:
            writer.add(name, _equal_copy(name, sources, picks))
            continue
        total = None
        for source, pick, w in zip(sources, picks, weights):
            tensor = source.get(pick)  # one tensor of one input in memory at a time
            term = w * tensor.to(torch.float32)
            del tensor
            total = term if total is None else total + term
            del term
        writer.add(name, total.to(dtype))
        del total
    shards = writer.finish()
    untied = [name for name, picks in plan if picks[ref] != name]
    _copy_side_files(folders[ref], out, untie=bool(untied))
    return {"tensors": len(plan), "shards": len(shards), "bytes": writer.total_bytes, "untied": untied}


def _same_architecture(sources: list[_Weights]) -> None:
    kinds = {s.config.get("model_type") for s in sources if s.config.get("model_type")}
    if len(kinds) > 1:
        raise MedtuneError(f"the models are of different architectures ({', '.join(sorted(kinds))})",
                           hint="only checkpoints of one architecture (one base model) can be averaged")


def _plan(sources: list[_Weights], ref: int) -> list[tuple[str, list[str]]]:
    """Every output tensor with the name to read in each input; refuses the first name or shape mismatch."""
    order = list(dict.fromkeys(sources[ref].names + [n for s in sources for n in s.names]))
    known = [set(s.names) for s in sources]
    plan = []
    for name in order:
        picks = []
        for source, names in zip(sources, known):
            pick = name if name in names else _tie_source(name, source)
            if pick is None:
                holder = next(s for s, n in zip(sources, known) if name in n)
                raise MedtuneError(f"tensor '{name}' is in {holder.label} but not in {source.label}",
                                   hint="only checkpoints of the same architecture and vocabulary can be averaged")
            picks.append(pick)
        shapes = [source.meta(pick)[0] for source, pick in zip(sources, picks)]
        for source, shape in zip(sources, shapes):
            if shape != shapes[0]:
                raise MedtuneError(f"tensor '{name}' has shape {shapes[0]} in {sources[0].label} but {shape} in "
                                   f"{source.label}", hint="only checkpoints of one architecture and vocabulary can "
                                   "be averaged; a run that added tokens cannot be averaged with its base")
        plan.append((name, picks))
    if not plan:
        raise MedtuneError("the models hold no tensors", where=str(sources[ref].folder))
    return plan


def _torch_dtype(code: str):
    import torch

    table = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
             "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
             "BOOL": torch.bool}
    if code not in table:
        raise MedtuneError(f"cannot average tensors of dtype {code}", hint="dequantise the checkpoint first")
    return table[code]


def _equal_copy(name: str, sources: list[_Weights], picks: list[str]):
    import torch

    first = sources[0].get(picks[0])
    for source, pick in zip(sources[1:], picks[1:]):
        if not torch.equal(first, source.get(pick)):
            raise MedtuneError(f"integer tensor '{name}' differs between {sources[0].label} and {source.label}; "
                               "integer tensors cannot be averaged")
    return first


def _copy_side_files(src: Path, dst: Path, *, untie: bool = False) -> None:
    """Config, generation config, tokenizer, chat template, remote code (*.py): every top-level file of `src`
    but weights and run records. With `untie`, the config says the output head is stored on its own."""
    for item in src.iterdir():
        if (item.is_file() and not item.name.startswith(".") and item.name not in _NOT_COPIED
                and not item.name.endswith(_NOT_COPIED_SUFFIXES)):
            shutil.copy2(item, dst / item.name)
    if untie and (dst / "config.json").is_file():
        config = json.loads((dst / "config.json").read_text(encoding="utf-8"))
        config["tie_word_embeddings"] = False
        runs.write_json(dst / "config.json", config)


def _origin(spec, folder: Path) -> dict:
    """What the output manifest says it descends from: the user's spec and that run's template and base."""
    manifest = runs.read_manifest(folder) if folder.is_dir() else None
    model = (manifest or {}).get("model", {})
    resolved = str(Path(str(spec)).resolve()) if Path(str(spec)).exists() else str(spec)
    return {"spec": str(spec), "weights": resolved, "base": model.get("base", resolved), "template": model.get("template")}


# ------------------------------------------------------------------------------------------- merge LoRA


def merge_lora(run, out, *, overwrite: bool = False, trust_remote_code: bool = False, quiet: bool = False) -> Path:
    """Merge a LoRA run into full weights in `out` (folder), as `models.load` merges it in memory.

    run: a medtune run folder holding a LoRA adapter (`adapter: true` in medtune.json); a chain of adapter runs
      down to the full weights is merged in order.
    out: a new (or empty) folder; an existing non-empty one is replaced only with overwrite=True.
    The merge runs in float32 (the whole model in memory once) and the weights are cast back to the dtype of
    the base checkpoint. Written: safetensors weights, tokenizer, generation config, remote-code files (*.py and
    the config's `auto_map`) of the base, and medtune.json (stage merge, adapter false). A reward-model run keeps
    its head: reward_head.safetensors and the manifest's reward_head/reward_stats are copied, so
    `models.load_reward_model(out)` scores as the run did.
    """
    target = Path(models.resolve(str(run)))
    manifest = runs.read_manifest(target) if target.is_dir() else None
    if not manifest or not manifest.get("adapter"):
        raise MedtuneError("not a LoRA run (its medtune.json does not say adapter: true)", where=str(run),
                           hint="full weights need no merging; pass the folder itself to later commands")
    if not (target / "adapter_config.json").is_file():
        raise MedtuneError(f"the run holds no adapter (status: {manifest.get('status')})", where=str(run),
                           hint="merge a completed run")
    if manifest.get("reward_head") and not (target / models.REWARD_HEAD_FILE).is_file():
        raise MedtuneError(f"the reward-model run has no {models.REWARD_HEAD_FILE}", where=str(run))
    out = Path(out)
    with _atomic_folder(out, overwrite=overwrite, inputs=[target]) as tmp:
        loaded = models.load(models.ModelConfig(name_or_path=str(target), dtype="float32",
                                                trust_remote_code=trust_remote_code), device="cpu")
        model = loaded.model
        if hasattr(model, models.REWARD_HEAD):  # the head is stored on its own, as `medtune rm` stores it
            delattr(model, models.REWARD_HEAD)
        base = Path(loaded.base) if Path(loaded.base).is_dir() else None
        dtype = _config_dtype(_read_config(base)) if base else None
        if dtype is not None:
            model.to(dtype)
        model.save_pretrained(tmp)
        loaded.tokenizer.save_pretrained(tmp)
        if base:
            _copy_remote_code(base, tmp)
        if manifest.get("reward_head"):
            shutil.copy2(target / models.REWARD_HEAD_FILE, tmp / models.REWARD_HEAD_FILE)
        record = {
            "stage": "merge", "method": "lora", "status": "completed", "created": runs.now(), "adapter": False,
            "merged_from": str(target), "chain": loaded.chain,
            "model": {"spec": str(run), "weights": str(target), "base": loaded.base,
                      "template": manifest.get("model", {}).get("template")},
        }
        for key in ("reward_head", "reward_stats"):
            if manifest.get(key):
                record[key] = manifest[key]
        _write_manifest(tmp, record)
    if not quiet:
        head = " + reward head" if manifest.get("reward_head") else ""
        print(f"merged {len(loaded.chain)} LoRA run(s) into {loaded.base}: wrote full weights{head}, tokenizer and "
              f"medtune.json to {out}")
    return out


def _config_dtype(config: dict):
    import torch

    name = config.get("dtype") or config.get("torch_dtype")
    return {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}.get(name)


def _copy_remote_code(base: Path, dst: Path) -> None:
    """The base's own Python files and the config's auto_map, when save_pretrained did not bring them."""
    for item in base.glob("*.py"):
        if not (dst / item.name).exists():
            shutil.copy2(item, dst / item.name)
    auto_map = _read_config(base).get("auto_map")
    config = _read_config(dst)
    if auto_map and config and "auto_map" not in config:
        config["auto_map"] = auto_map
        runs.write_json(dst / "config.json", config)
    if (base / "generation_config.json").is_file() and not (dst / "generation_config.json").exists():
        shutil.copy2(base / "generation_config.json", dst / "generation_config.json")


# ---------------------------------------------------------------------------------------------- average


def layer_side(name: str, split_layer: int) -> str:
    """`lower` or `upper`: which alpha a tensor gets in a layer-wise average.

    Tensors of decoder layer i are lower when i < split_layer. Outside the layers, the output side
    (lm_head, embed_out, output.*, the final norm and anything else) is upper, and the input embeddings
    (embed_tokens, wte, wpe, word_embeddings, ...) are lower. A tied LM head is the input embedding: lower.
    """
    match = _LAYER.search(name)
    if match:
        return "lower" if int(match.group(1)) < split_layer else "upper"
    if any(part in name for part in _UPPER_NAMES):
        return "upper"
    return "lower" if any(part in name for part in _LOWER_NAMES) else "upper"


def _layer_count(names: list[str]) -> int:
    indices = [int(m.group(1)) for m in map(_LAYER.search, names) if m]
    return max(indices) + 1 if indices else 0


def _check_alpha(value, label: str) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise MedtuneError(f"{label} must be a number between 0 and 1, got {value!r}") from None
    if not 0.0 <= value <= 1.0 or math.isnan(value):
        raise MedtuneError(f"{label} must be between 0 and 1, got {value}",
                           hint="0 gives the base model, 1 the tuned model")
    return value


def average(base, tuned, out, alpha: float | None = None, alpha_lower: float | None = None,
            alpha_upper: float | None = None, split_layer: int | None = None, *, overwrite: bool = False,
            shard_bytes: int = SHARD_BYTES, trust_remote_code: bool = False, quiet: bool = False) -> Path:
    """Write out = alpha * tuned + (1 - alpha) * base, tensor by tensor, into the folder `out`.

    base, tuned: folders of safetensors weights (HF checkpoints, full-weight runs, `default`, a .gguf file),
      or medtune LoRA runs (merged first into a temporary folder with `merge_lora`).
    alpha: 0 gives base, 1 gives tuned (0 <= alpha <= 1).
    alpha_lower, alpha_upper, split_layer: a layer-wise average. Tensors of decoder layers with index <
      split_layer (default: half the layers) use alpha_lower, the rest alpha_upper; embeddings count as lower,
      the final norm and LM head as upper (see `layer_side`). Either one defaults to `alpha`.
    shard_bytes: an output shard is written once the pending tensors pass this; more than one shard gets a
      model.safetensors.index.json.
    Config, tokenizer and generation config come from `tuned`, and each tensor keeps tuned's dtype (the sum is
    computed in float32). Tensor names and shapes must match (MedtuneError naming the first that does not); an
    LM head tied to the embedding in one model and stored in the other is handled. The reward head of an RM
    run is not carried over.
    """
    if alpha is None and (alpha_lower is None or alpha_upper is None):
        raise MedtuneError("give alpha, or both alpha_lower and alpha_upper")
    lower = _check_alpha(alpha, "alpha") if alpha_lower is None else _check_alpha(alpha_lower, "alpha_lower")
    upper = _check_alpha(alpha, "alpha") if alpha_upper is None else _check_alpha(alpha_upper, "alpha_upper")
    layered = alpha_lower is not None or alpha_upper is not None or split_layer is not None
    out = Path(out)
    _check_out(out, overwrite, [base, tuned])
    with _work_folder(out) as work:
        base_dir = _materialise(base, work, "base", trust_remote_code=trust_remote_code)
        tuned_dir = _materialise(tuned, work, "tuned", trust_remote_code=trust_remote_code)
        return _average(base_dir, tuned_dir, out, lower, upper, split_layer if layered else None, layered=layered,
                        inputs={"base": _origin(base, base_dir), "tuned": _origin(tuned, tuned_dir)},
                        overwrite=overwrite, shard_bytes=shard_bytes, quiet=quiet)


@contextlib.contextmanager
def _work_folder(out: Path):
    """A scratch folder beside `out` (for LoRA runs merged on the way), removed afterwards."""
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.work.", dir=out.parent))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _average(base_dir: Path, tuned_dir: Path, out: Path, lower: float, upper: float, split_layer, *, layered: bool,
             inputs: dict, overwrite: bool, shard_bytes: int, quiet: bool) -> Path:
    labels = [f"base ({inputs['base']['spec']})", f"tuned ({inputs['tuned']['spec']})"]
    record = {"stage": "merge", "method": "average", "status": "completed", "created": runs.now(), "adapter": False,
              "inputs": inputs, "model": {**inputs["tuned"]}}
    if layered:
        layers = _layer_count(_Weights(tuned_dir, labels[1]).names)
        if layers == 0:
            raise MedtuneError("no decoder layers found in the tensor names, so a layer-wise average cannot be split",
                               where=str(tuned_dir), hint="use a single alpha")
        split = layers // 2 if split_layer is None else int(split_layer)
        if not 0 <= split <= layers:
            raise MedtuneError(f"split_layer must be between 0 and {layers} (the model has {layers} layers), got {split}")
        record.update(alpha_lower=lower, alpha_upper=upper, split_layer=split, layers=layers)

        def coefficients(name):
            a = lower if layer_side(name, split) == "lower" else upper
            return [1.0 - a, a]
    else:
        record["alpha"] = lower

        def coefficients(name):
            return [1.0 - lower, lower]

    with _atomic_folder(out, overwrite=overwrite, inputs=[base_dir, tuned_dir]) as tmp:
        counts = _combine([base_dir, tuned_dir], labels, coefficients, tmp, ref=1, shard_bytes=shard_bytes, quiet=quiet)
        record["written"] = counts
        _write_manifest(tmp, record)
    if not quiet:
        what = (f"alpha {lower:g} below layer {record['split_layer']}, {upper:g} from it on" if layered
                else f"alpha {lower:g}")
        print(f"averaged {inputs['base']['spec']} and {inputs['tuned']['spec']} ({what}): wrote {counts['tensors']} "
              f"tensors in {counts['shards']} shard(s), {counts['bytes'] / 1e6:.1f} MB, to {out}")
    return out


# ------------------------------------------------------------------------------------------------- soups


def soup(models: list, out, weights: list[float] | None = None, *, overwrite: bool = False,
         shard_bytes: int = SHARD_BYTES, trust_remote_code: bool = False, quiet: bool = False) -> Path:
    """Average N checkpoints of one architecture (a uniform model soup, or weighted) into the folder `out`.

    models: two or more folders of safetensors weights, or LoRA runs (merged first).
    weights: one non-negative number per model, normalised to sum to 1 (default: all equal).
    Streamed like `average`; config, tokenizer and dtypes come from the first model.
    """
    specs = [str(m) for m in models]  # (the parameter hides the models module inside this function)
    if len(specs) < 2:
        raise MedtuneError("a soup needs at least two models")
    coeffs = _soup_weights(weights, len(specs))
    out = Path(out)
    _check_out(out, overwrite, specs)
    with _work_folder(out) as work:
        folders = [_materialise(m, work, f"model{i + 1}", trust_remote_code=trust_remote_code)
                   for i, m in enumerate(specs)]
        record = {"method": "soup", "weights": coeffs}
        return _soup(specs, folders, coeffs, out, record, overwrite=overwrite, shard_bytes=shard_bytes, quiet=quiet)


def _soup_weights(weights, n: int) -> list[float]:
    if weights is None:
        return [1.0 / n] * n
    weights = [float(w) for w in weights]
    if len(weights) != n:
        raise MedtuneError(f"{len(weights)} weights for {n} models", hint="give one weight per model")
    if any(w < 0 or math.isnan(w) for w in weights) or sum(weights) <= 0:
        raise MedtuneError("soup weights must be non-negative and not all zero")
    total = sum(weights)
    return [w / total for w in weights]


def _soup(specs: list[str], folders: list[Path], coeffs: list[float], out: Path, record: dict, *, overwrite: bool,
          shard_bytes: int, quiet: bool) -> Path:
    labels = [f"model {i + 1} ({s})" for i, s in enumerate(specs)]
    inputs = [_origin(s, f) for s, f in zip(specs, folders)]
    manifest = {"stage": "merge", "status": "completed", "created": runs.now(), "adapter": False, **record,
                "inputs": {"models": inputs}, "model": {**inputs[0]}}
    with _atomic_folder(out, overwrite=overwrite, inputs=folders) as tmp:
        counts = _combine(folders, labels, lambda name: coeffs, tmp, ref=0, shard_bytes=shard_bytes, quiet=quiet)
        manifest["written"] = counts
        _write_manifest(tmp, manifest)
    if not quiet:
        print(f"soup of {len(folders)} models (weights {', '.join(f'{c:.3g}' for c in coeffs)}): wrote "
              f"{counts['tensors']} tensors in {counts['shards']} shard(s) to {out}")
    return out


def greedy_soup(models: list, out, score_fn: Callable[[str], float], *, overwrite: bool = False,
                shard_bytes: int = SHARD_BYTES, trust_remote_code: bool = False, quiet: bool = False) -> dict:
    """The greedy soup of Wortsman et al. (2022): score every model alone, sort by score (best first; ties keep
    the given order), start the soup with the best, and add each next model if the uniform average of the soup
    and that model scores at least as well as the soup without it (the score does not drop).

    score_fn(folder) -> float, higher is better: e.g. accuracy on a held-out validation set (never the test
    set you report). It is called once per model and once per candidate soup.
    Writes the final soup to `out` (a single model is copied as is) and returns
    {"out", "ingredients", "score", "individual": [{model, score}], "steps": [{model, score, kept}]}.
    """
    specs = [str(m) for m in models]
    if len(specs) < 2:
        raise MedtuneError("a greedy soup needs at least two models")
    out = Path(out)
    _check_out(out, overwrite, specs)
    with _work_folder(out) as work:
        folders = [_materialise(m, work, f"model{i + 1}", trust_remote_code=trust_remote_code)
                   for i, m in enumerate(specs)]
        individual = [float(score_fn(str(f))) for f in folders]
        order = sorted(range(len(specs)), key=lambda i: -individual[i])  # stable: ties keep the given order
        chosen, best, steps = [order[0]], individual[order[0]], []
        for k, i in enumerate(order[1:], 1):
            candidate = work / f"candidate-{k}"
            trial = chosen + [i]
            _soup([specs[j] for j in trial], [folders[j] for j in trial], [1.0 / len(trial)] * len(trial), candidate,
                  {"method": "soup"}, overwrite=False, shard_bytes=shard_bytes, quiet=True)
            score = float(score_fn(str(candidate)))
            kept = score >= best
            steps.append({"model": specs[i], "score": score, "kept": kept})
            if kept:
                chosen, best = trial, score
            shutil.rmtree(candidate, ignore_errors=True)
        result = {"out": str(out), "ingredients": [specs[j] for j in chosen], "score": best,
                  "individual": [{"model": s, "score": v} for s, v in zip(specs, individual)], "steps": steps}
        record = {"method": "greedy_soup", "weights": [1.0 / len(chosen)] * len(chosen),
                  "greedy": {k: v for k, v in result.items() if k != "out"}}
        _soup([specs[j] for j in chosen], [folders[j] for j in chosen], record["weights"], out, record,
              overwrite=overwrite, shard_bytes=shard_bytes, quiet=True)
    if not quiet:
        print(f"greedy soup: kept {len(chosen)} of {len(specs)} models (score {best:.4g}; best single model "
              f"{individual[order[0]]:.4g}): {', '.join(result['ingredients'])}")
        print(f"  wrote the soup and medtune.json to {out}")
    return result


# ------------------------------------------------------------------------------------------------- sweep


def choose_alpha(table: list[dict], *, max_general_drop: float = 1.0, max_perplexity_increase: float = 0.05) -> float:
    """The sweep's rule. The reference is the row with alpha 0 (the base model). A row is admissible when
    its general accuracy (mean over general tasks) is at most `max_general_drop` accuracy points (percentage
    points, 1.0 = 0.01) below the reference's, and its general perplexity (mean over general text files) at most
    `max_perplexity_increase` (relative, 0.05 = 5%) above the reference's; each test applies when measured.
    Chosen: the admissible row with the highest domain accuracy; ties go to the smaller alpha (nearer the base).
    Sets each row's `admissible` and returns the chosen alpha.
    """
    ref = next((row for row in table if row["alpha"] == 0), None)
    if ref is None:
        raise MedtuneError("the sweep table has no alpha 0 row (the reference)")
    for row in table:
        ok = True
        if ref.get("general_accuracy") is not None:
            ok &= (ref["general_accuracy"] - row["general_accuracy"]) * 100 <= max_general_drop + 1e-9
        if ref.get("general_perplexity") is not None:
            ok &= row["general_perplexity"] <= ref["general_perplexity"] * (1 + max_perplexity_increase) + 1e-12
        row["admissible"] = bool(ok)
    admissible = [row for row in table if row["admissible"]]  # the reference always is
    return max(admissible, key=lambda row: (row["domain_accuracy"], -row["alpha"]))["alpha"]


def _alpha_name(alpha: float) -> str:
    return f"alpha-{alpha:g}"


def sweep(base, tuned, out_dir, alphas=DEFAULT_ALPHAS, *, domain_tasks=("mcq",), general_tasks=(), general_text=(),
          eval_settings=None, limit: int = 0, max_general_drop: float = 1.0, max_perplexity_increase: float = 0.05,
          keep_models: bool = True, overwrite: bool = False, shard_bytes: int = SHARD_BYTES,
          trust_remote_code: bool = False) -> tuple[list[dict], float]:
    """Average `base` and `tuned` at each alpha, evaluate each, and choose an alpha by `choose_alpha`'s rule.

    alphas: values in [0, 1]; 0 (the reference) is always added. Each model goes to out_dir/alpha-X, its
      evaluation to out_dir/eval/alpha-X.
    domain_tasks: the medical tasks (mean accuracy = the domain score; default the generic `mcq`, whose file
      defaults to the demo exam). general_tasks: tasks scored as general ability (mean accuracy), and/or
      general_text: text files whose perplexity measures general ability. At least one general measure.
    eval_settings: a medtune.eval.runner.EvalSettings for everything else (files, data_dir, shots, mode,
      batch_size); its tasks, general tasks, texts and health are replaced by the arguments here.
    limit: a seeded sample of N items per task (0 = all), to keep a sweep small.
    keep_models: False keeps only the chosen alpha's folder (the others are removed once evaluated).
    Writes out_dir/sweep.json, sweep.md and tradeoff.png; returns (table, chosen alpha).
    """
    from medtune.eval import runner, tasks
    from medtune.data import formats, resolve_path

    values = sorted({0.0, *(_check_alpha(a, "alpha") for a in alphas)})
    settings = replace(eval_settings or runner.EvalSettings(), tasks=list(domain_tasks),
                       general_tasks=list(general_tasks), general_text=[str(p) for p in general_text],
                       limit=limit or (eval_settings.limit if eval_settings else 0), health=False)
    if not settings.tasks:
        raise MedtuneError("the sweep needs at least one domain task", hint="e.g. --tasks mcq")
    if not (settings.general_tasks or settings.general_text):
        raise MedtuneError("the sweep needs a general measure to weigh forgetting against",
                           hint="pass --general-tasks TASKS and/or --general-text FILE")
    overlap = set(settings.tasks) & set(settings.general_tasks)
    if overlap:
        raise MedtuneError(f"task {sorted(overlap)[0]} is both a domain and a general task",
                           hint="one task name, one file: use perplexity on general text, or another task")
    for name in settings.tasks + settings.general_tasks:  # every file is checked before any model is written
        tasks.load_task(name, runner.task_file(name, settings), setting=settings.setting, limit=settings.limit,
                        seed=settings.seed)
    for path in settings.general_text:
        formats.load_texts(resolve_path(path), mode=settings.text_mode)

    out_dir = Path(out_dir)
    _check_out(out_dir, overwrite, [base, tuned])
    if overwrite and out_dir.is_dir():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with _work_folder(out_dir / "inputs") as work:
        base_dir = _materialise(base, work, "base", trust_remote_code=trust_remote_code)
        tuned_dir = _materialise(tuned, work, "tuned", trust_remote_code=trust_remote_code)
        inputs = {"base": _origin(base, base_dir), "tuned": _origin(tuned, tuned_dir)}

        def write(alpha):
            return _average(base_dir, tuned_dir, out_dir / _alpha_name(alpha), alpha, alpha, None, layered=False,
                            inputs=inputs, overwrite=False, shard_bytes=shard_bytes, quiet=True)

        table = []
        for alpha in values:
            model_dir = write(alpha)
            print(f"\nsweep: alpha {alpha:g} -> {model_dir}", file=sys.stderr)
            eval_dir = runner.evaluate(str(model_dir), settings, str(out_dir / "eval" / _alpha_name(alpha)))
            table.append(_row(alpha, model_dir, eval_dir, settings))
            if not keep_models:
                shutil.rmtree(model_dir)
        chosen = choose_alpha(table, max_general_drop=max_general_drop,
                              max_perplexity_increase=max_perplexity_increase)
        if not keep_models:
            write(chosen)
    for row in table:
        row["chosen"] = row["alpha"] == chosen
        row["model"] = str(out_dir / _alpha_name(row["alpha"])) if keep_models or row["chosen"] else None
    rule = {"reference_alpha": 0.0, "max_general_drop": max_general_drop,
            "max_perplexity_increase": max_perplexity_increase,
            "text": _rule_text(max_general_drop, max_perplexity_increase)}
    _plot(table, out_dir / "tradeoff.png", max_general_drop, max_perplexity_increase)
    result = {"kind": "merge-sweep", "created": runs.now(), "inputs": inputs, "alphas": values,
              "domain_tasks": settings.tasks, "general_tasks": settings.general_tasks,
              "general_text": settings.general_text, "limit": settings.limit, "rule": rule, "table": table,
              "chosen": chosen, "chosen_model": str(out_dir / _alpha_name(chosen)), "plot": "tradeoff.png",
              "libraries": runs.library_versions()}
    runs.write_json(out_dir / "sweep.json", result)
    runs.atomic_write_text(out_dir / "sweep.md", _sweep_markdown(result))
    _sweep_summary(result, out_dir)
    return table, chosen


def _mean(values):
    values = list(values)
    return sum(values) / len(values) if values else None


def _row(alpha: float, model_dir: Path, eval_dir: Path, settings) -> dict:
    result = json.loads((Path(eval_dir) / "results.json").read_text(encoding="utf-8"))
    domain = {t: result["tasks"][t]["accuracy"] for t in settings.tasks}
    general = {t: result["tasks"][t]["accuracy"] for t in settings.general_tasks}
    perplexity = {name: p["perplexity"] for name, p in result.get("perplexity", {}).items()}
    return {"alpha": alpha, "model": str(model_dir), "eval": str(eval_dir), "domain": domain,
            "domain_accuracy": _mean(domain.values()), "general": general, "general_accuracy": _mean(general.values()),
            "perplexity": perplexity, "general_perplexity": _mean(perplexity.values())}


def _rule_text(max_general_drop: float, max_perplexity_increase: float) -> str:
    return (f"Reference: alpha 0 (the base). Admissible: general accuracy at most {max_general_drop:g} accuracy "
            f"point(s) below "
            f"the reference's and general perplexity at most {max_perplexity_increase:.0%} above it (each where "
            "measured). Chosen: the admissible alpha with the highest domain accuracy; ties go to the smaller alpha.")


def _fmt(value, spec=".3f"):
    return "—" if value is None else format(value, spec)


def _sweep_markdown(result: dict) -> str:
    from medtune import NOT_MEDICAL_ADVICE

    general = ", ".join(result["general_tasks"] + [f"perplexity on {Path(p).name}" for p in result["general_text"]])
    limit = f" (a sample of {result['limit']} items per task)" if result["limit"] else ""
    lines = [f"# Averaging sweep: {result['inputs']['base']['spec']} -> {result['inputs']['tuned']['spec']}", "",
             f"> {NOT_MEDICAL_ADVICE}", "",
             f"Domain tasks: {', '.join(result['domain_tasks'])}; general: {general}{limit}.", "",
             "| alpha | domain accuracy | general accuracy | general perplexity | admissible | chosen |",
             "|---:|---:|---:|---:|:---:|:---:|"]
    for row in result["table"]:
        lines.append(f"| {row['alpha']:g} | {_fmt(row['domain_accuracy'])} | {_fmt(row['general_accuracy'])} | "
                     f"{_fmt(row['general_perplexity'], '.2f')} | {'yes' if row['admissible'] else 'no'} | "
                     f"{'**chosen**' if row['chosen'] else ''} |")
    lines += ["", f"Rule: {result['rule']['text']}", "",
              f"Chosen: alpha {result['chosen']:g} -> `{result['chosen_model']}`", "",
              "![domain against general score](tradeoff.png)", ""]
    return "\n".join(lines)


def _plot(table: list[dict], path: Path, max_general_drop: float, max_perplexity_increase: float) -> None:
    """Domain accuracy (y) against the general score (x), each point labelled with its alpha; a dashed line
    marks the most forgetting the rule admits."""
    from matplotlib.figure import Figure  # the object API renders with Agg: no pyplot, no display

    by_accuracy = table[0]["general_accuracy"] is not None
    key = "general_accuracy" if by_accuracy else "general_perplexity"
    xs, ys = [row[key] for row in table], [row["domain_accuracy"] for row in table]
    fig = Figure(figsize=(6, 4.5), layout="constrained")
    ax = fig.subplots()
    ax.plot(xs, ys, "-", color="#9ab", zorder=1)
    for row, x, y in zip(table, xs, ys):
        color = "#c03030" if row["chosen"] else ("#4878a8" if row["admissible"] else "#aaaaaa")
        ax.scatter([x], [y], s=60 if row["chosen"] else 36, color=color, zorder=2)
        ax.annotate(f"α={row['alpha']:g}" + (" (chosen)" if row["chosen"] else ""), (x, y),
                    textcoords="offset points", xytext=(6, 4), fontsize=9)
    ref = next(row[key] for row in table if row["alpha"] == 0)
    limit = ref - max_general_drop / 100 if by_accuracy else ref * (1 + max_perplexity_increase)
    ax.axvline(limit, color="#c03030", linestyle="--", linewidth=1, label="most forgetting the rule admits")
    ax.legend(fontsize=8, loc="best")
    if by_accuracy:
        ax.set_xlabel("general accuracy (higher is better)")
    else:
        ax.set_xlabel("general perplexity (lower is better; axis reversed)")
        ax.invert_xaxis()
    ax.set_ylabel("domain accuracy")
    ax.set_title("weight averaging: domain against general (grey: not admissible)", fontsize=10)
    ax.grid(alpha=0.3)
    fd, tmp = runs.temporary_file(path, ".png")
    os.close(fd)
    try:
        fig.savefig(tmp, format="png", dpi=110, metadata={"Software": None})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _sweep_summary(result: dict, out_dir: Path) -> None:
    print(f"\nmerge sweep: {len(result['table'])} alphas")
    for row in result["table"]:
        general = _fmt(row["general_accuracy"]) if row["general_accuracy"] is not None else \
            f"ppl {_fmt(row['general_perplexity'], '.2f')}"
        mark = "  <- chosen" if row["chosen"] else ("" if row["admissible"] else "  (too much forgetting)")
        print(f"  alpha {row['alpha']:<5g} domain {_fmt(row['domain_accuracy'])}  general {general}{mark}")
    print(f"  chosen alpha {result['chosen']:g}: {result['chosen_model']}")
    print(f"  wrote sweep.json, sweep.md, tradeoff.png and eval/ to {out_dir}")


# --------------------------------------------------------------------------------------------------- CLI


def _size(text: str) -> int:
    """`2GB`, `500MB`, `64KB` or a number of bytes (at least 1)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]i?B?|B)?\s*", text, re.IGNORECASE)
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 2GB, 500MB)")
    unit = (match.group(2) or "B").upper().rstrip("B").rstrip("I")
    size = int(float(match.group(1)) * {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}[unit])
    if size < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 byte (got {text!r})")
    return size


_size.bounds = (1, None)


def _numbers(low: float, high: float | None):
    """An argparse `type=` for comma-separated finite numbers in [low, high]."""

    def parse(text: str) -> list[float]:
        try:
            values = [float(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a comma-separated list of numbers: {text!r}") from None
        for v in values:
            if not math.isfinite(v) or v < low or (high is not None and v > high):
                rule = f"between {low:g} and {high:g}" if high is not None else f"finite and at least {low:g}"
                raise argparse.ArgumentTypeError(f"must hold numbers {rule} (got {text})")
        return values

    parse.bounds = (low, high)
    return parse


def _names(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def _eval_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tasks", default="mcq", help="comma-separated domain tasks (default mcq: the demo exam "
                   "unless --file mcq=PATH)")
    p.add_argument("--file", action="append", metavar="TASK=PATH", help="the file of one task (repeatable)")
    p.add_argument("--data-dir", help="folder holding pubmedqa/, medmcqa/, medqa/, mmlu/, cmmlu/, mcq/")
    p.add_argument("--limit", type=int_option(0), default=0, help="a seeded random sample of N items per task (0 = all)")
    p.add_argument("--batch-size", type=int_option(1), default=8)
    p.add_argument("--text-mode", default="line", choices=["line", "paragraph"],
                   help="--general-text .txt files: one document per line (default) or per blank-line paragraph")


def _eval_settings(ns):
    from medtune.eval import runner

    files = {}
    for spec in ns.file or []:
        task, sep, path = spec.partition("=")
        if not sep or not task.strip() or not path.strip():
            raise MedtuneError(f"--file {spec!r}: expected TASK=PATH", hint="e.g. --file mcq=data/exam.jsonl")
        files[task.strip()] = path.strip()
    return runner.EvalSettings(tasks=_names(ns.tasks), data_dir=ns.data_dir, files=files, limit=ns.limit,
                               batch_size=ns.batch_size, text_mode=getattr(ns, "text_mode", "line"))


def parser() -> argparse.ArgumentParser:
    """`medtune merge`'s options, each numeric one range-checked (a bad one: one line, exit code 2)."""
    alpha = float_option(0, 1)
    p = CommandParser(prog="medtune merge", description="merge LoRA runs, average checkpoints, make soups "
                                "(docs/merge.md)")
    sub = p.add_subparsers(dest="how", required=True)

    lo = sub.add_parser("lora", help="merge a LoRA run (and the runs under it) into full weights")
    lo.add_argument("run", help="a medtune run folder holding a LoRA adapter")
    lo.add_argument("out", help="the new folder of full weights")
    lo.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT")
    lo.add_argument("--trust-remote-code", action="store_true")

    av = sub.add_parser("average", help="out = alpha * TUNED + (1 - alpha) * BASE, streamed tensor by tensor")
    av.add_argument("base", help="the model before tuning: a folder, a run, default or a .gguf file")
    av.add_argument("tuned", help="the tuned model: a folder or a run (LoRA runs are merged first)")
    av.add_argument("out", help="the averaged model's folder (with --sweep: the sweep folder)")
    av.add_argument("--alpha", type=alpha, help="0 = base, 1 = tuned")
    av.add_argument("--alpha-lower", type=alpha, help="alpha of the embeddings and the layers below --split-layer")
    av.add_argument("--alpha-upper", type=alpha, help="alpha of the layers from --split-layer on, final norm, LM head")
    av.add_argument("--split-layer", type=int_option(0), help="first layer of the upper part (default: half the layers)")
    av.add_argument("--sweep", type=_numbers(0, 1), metavar="A,B,...",
                    help="evaluate these alphas (e.g. 0,0.25,0.5,0.75,1) and choose one by the stated rule")
    _eval_arguments(av)
    av.add_argument("--general-tasks", help="sweep: comma-separated tasks scored as general ability")
    av.add_argument("--general-text", action="append", metavar="FILE", help="sweep: perplexity on general text (repeatable)")
    av.add_argument("--max-general-drop", type=float_option(0, 100), default=1.0,
                    help="sweep: most general accuracy points an alpha may lose against alpha 0 (default 1)")
    av.add_argument("--max-ppl-increase", type=float_option(0), default=0.05,
                    help="sweep: most relative general perplexity increase against alpha 0 (default 0.05 = 5%%)")
    av.add_argument("--only-chosen", action="store_true", help="sweep: keep only the chosen alpha's model folder")
    av.add_argument("--shard-size", type=_size, default=SHARD_BYTES, help="largest output shard (default 2GB)")
    av.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT")
    av.add_argument("--trust-remote-code", action="store_true")

    so = sub.add_parser("soup", help="average several checkpoints of one architecture (a model soup)")
    so.add_argument("out", help="the soup's folder")
    so.add_argument("models", nargs="+", metavar="MODEL", help="two or more folders or runs")
    so.add_argument("--weights", type=_numbers(0, None), metavar="W,W,...", help="one weight per model (normalised)")
    so.add_argument("--greedy", action="store_true",
                    help="greedy soup: add models best first while the mean accuracy on --tasks does not drop")
    _eval_arguments(so)
    so.add_argument("--shard-size", type=_size, default=SHARD_BYTES, help="largest output shard (default 2GB)")
    so.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT")
    so.add_argument("--trust-remote-code", action="store_true")
    return p


def accuracy_score(settings, work) -> Callable[[str], float]:
    """A greedy-soup score: mean accuracy of a model folder on `settings.tasks` (evaluations go under `work`)."""
    from medtune.eval import runner

    calls = []

    def score(folder: str) -> float:
        calls.append(folder)
        out = runner.evaluate(folder, replace(settings, general_tasks=[], general_text=[], health=False),
                              str(Path(work) / f"eval-{len(calls)}"))
        result = json.loads((out / "results.json").read_text(encoding="utf-8"))
        return _mean(result["tasks"][t]["accuracy"] for t in settings.tasks)

    return score


def cli(args: list[str]) -> int:
    """`medtune merge lora|average|soup ...`; returns 0. A user error raises MedtuneError (the caller prints it
    on one line and exits 2); bad arguments exit through argparse."""
    ns = parser().parse_args(args)
    common = dict(overwrite=ns.overwrite, trust_remote_code=ns.trust_remote_code)
    if ns.how == "lora":
        merge_lora(ns.run, ns.out, **common)
        return 0
    if ns.how == "average":
        if ns.sweep is not None:
            if ns.alpha is not None or ns.alpha_lower is not None or ns.alpha_upper is not None:
                raise MedtuneError("--sweep tries several alphas; leave out --alpha, --alpha-lower and --alpha-upper")
            settings = _eval_settings(ns)
            sweep(ns.base, ns.tuned, ns.out, ns.sweep, domain_tasks=settings.tasks,
                  general_tasks=_names(ns.general_tasks), general_text=ns.general_text or [], eval_settings=settings,
                  limit=ns.limit, max_general_drop=ns.max_general_drop, max_perplexity_increase=ns.max_ppl_increase,
                  keep_models=not ns.only_chosen, shard_bytes=ns.shard_size, **common)
            return 0
        if ns.general_tasks or ns.general_text:
            raise MedtuneError("--general-tasks and --general-text apply to a --sweep")
        if ns.alpha is None and (ns.alpha_lower is None or ns.alpha_upper is None):
            raise MedtuneError("average needs --alpha (or --alpha-lower and --alpha-upper), or --sweep",
                               hint="e.g. medtune merge average BASE TUNED OUT --alpha 0.5")
        average(ns.base, ns.tuned, ns.out, ns.alpha, ns.alpha_lower, ns.alpha_upper, ns.split_layer,
                shard_bytes=ns.shard_size, **common)
        return 0
    if ns.greedy:
        if ns.weights:
            raise MedtuneError("--weights and --greedy exclude each other (a greedy soup is uniform)")
        out = Path(ns.out)
        with _work_folder(out) as work:
            greedy_soup(ns.models, out, accuracy_score(_eval_settings(ns), work), shard_bytes=ns.shard_size, **common)
        return 0
    soup(ns.models, ns.out, ns.weights, shard_bytes=ns.shard_size, **common)
    return 0
