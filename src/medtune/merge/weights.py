"""Reading and writing safetensors weights for `medtune merge`, one tensor at a time.

Reads top to bottom: `Weights` (the tensors of one model folder, shapes and dtypes from the headers) ->
`ShardWriter` (output shards written as they fill, then named and indexed) -> `combine`, the streamed weighted
sum every merge method shares (tied output heads, integer buffers, side files copied from one input).

`combine` never holds whole models: each output tensor is read from every input in turn, summed in float32, cast
back to its dtype and queued into the pending output shard, which is written once it passes `shard_bytes`. Peak
memory is about one shard plus a few float32 copies of the largest tensor.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Callable

from medtune import runs
from medtune.errors import MedtuneError

SHARD_BYTES = 2 * 1024**3  # an output shard is written once the pending tensors pass this (bytes)
INDEX = "model.safetensors.index.json"

# files of a model folder that are not copied beside averaged weights (weights, run records, model cards)
_NOT_COPIED_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".ckpt", ".h5", ".msgpack", ".onnx",
                        ".index.json")
_NOT_COPIED = {runs.MANIFEST, "adapter_config.json", "README.md", "trainer_state.json"}

# an output head that may be stored only as its tied input embedding
_OUTPUT_HEADS = ("lm_head.weight", "embed_out.weight")
_INPUT_EMBEDDINGS = ("embed_tokens.weight", "wte.weight", "word_embeddings.weight", "tok_embeddings.weight",
                     "embed_in.weight")

# --------------------------------------------------------------------------------------- reading weights


class Weights:
    """The safetensors tensors of one model folder. Shapes and dtypes are read from the headers up front; `get`
    memory-maps the tensor's file only while it copies that one tensor out, so no mapped pages pile up."""

    def __init__(self, folder: Path, label: str):
        self.folder, self.label = Path(folder), label
        self.config = read_config(self.folder)
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


def read_config(folder: Path) -> dict:
    """A model folder's config.json ({} when it has none); invalid JSON is a MedtuneError naming the file."""
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


def _tie_source(name: str, source: Weights) -> str | None:
    """The input embedding a missing output head is tied to (stored once in safetensors), if any."""
    if not name.endswith(_OUTPUT_HEADS) and name != "output.weight":
        return None
    if source.config.get("tie_word_embeddings") is False:
        return None
    found = [n for n in source.names if n.endswith(_INPUT_EMBEDDINGS)]
    return found[0] if len(found) == 1 else None


# --------------------------------------------------------------------------------------- writing shards


class ShardWriter:
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


# ------------------------------------------------------------------------- the streamed weighted sum


def combine(folders: list[Path], labels: list[str], coefficients: Callable[[str], list[float]], out: Path, *,
            ref: int, shard_bytes: int = SHARD_BYTES, quiet: bool = False) -> dict:
    """Write sum_i c_i * tensor_i for every tensor (c = coefficients(name), one per folder) into `out`, streamed.

    Tensor names and shapes must agree (the first disagreement is a MedtuneError naming the tensor); an output
    head missing from a folder is read from the embedding it is tied to. Sums are computed in float32 in folder
    order and cast back to the dtype of folder `ref`, whose config, tokenizer and other files are copied.
    Integer tensors (rare buffers) must be equal everywhere and are copied. Returns counts for the summary.
    """
    import torch
    from tqdm import tqdm

    sources = [Weights(f, label) for f, label in zip(folders, labels)]
    _same_architecture(sources)
    plan = _plan(sources, ref)
    writer = ShardWriter(out, shard_bytes)
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


def _same_architecture(sources: list[Weights]) -> None:
    kinds = {s.config.get("model_type") for s in sources if s.config.get("model_type")}
    if len(kinds) > 1:
        raise MedtuneError(f"the models are of different architectures ({', '.join(sorted(kinds))})",
                           hint="only checkpoints of one architecture (one base model) can be averaged")


def _plan(sources: list[Weights], ref: int) -> list[tuple[str, list[str]]]:
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


def _equal_copy(name: str, sources: list[Weights], picks: list[str]):
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
