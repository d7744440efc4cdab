"""The merge methods: fold a LoRA run into full weights (`merge_lora`), average a tuned model with its base
(`average`, whole-model or layer-wise alphas), and average several checkpoints (`soup`, `greedy_soup`).

Reads top to bottom: inputs (a LoRA run merged on the way, what the manifest says each input is) ->
`merge_lora` -> `average` -> `soup` and `greedy_soup`. Every method writes its folder through
`runs.new_folder` (a temporary folder renamed into place, so a failure leaves an earlier folder whole) and sums
weights through `weights.combine` (streamed, one tensor at a time).
"""

from __future__ import annotations

import math
import re
import shutil
from pathlib import Path
from typing import Callable

from medtune import models, runs
from medtune.errors import MedtuneError
from medtune.merge.weights import SHARD_BYTES, Weights, combine, read_config

# a decoder layer's index inside a tensor name: model.layers.7., transformer.h.7., gpt_neox.layers.7., blocks.7.
_LAYER = re.compile(r"(?:^|\.)(?:layers|layer|h|blocks|block)\.(\d+)\.")
_UPPER_NAMES = ("lm_head", "embed_out", "output.")  # outside the layers: output side
_LOWER_NAMES = ("embed", "wte", "wpe", "word_embeddings", "tok_embeddings")  # outside the layers: input side


def write_manifest(folder: Path, manifest: dict) -> None:
    """A merged folder's medtune.json, with the library versions and the time it was finished."""
    runs.write_json(folder / runs.MANIFEST, {**manifest, "libraries": runs.library_versions(), "finished": runs.now()})


# ------------------------------------------------------------------------------------------------ inputs


def materialise(spec, work: Path, label: str, *, trust_remote_code: bool = False) -> Path:
    """A local folder of full safetensors weights for `spec`: as is, or a LoRA run merged into `work`."""
    target = models.resolve(str(spec))
    if not Path(target).is_dir():
        raise MedtuneError(f"{label} must be a local folder to be averaged", where=str(spec),
                           hint=f"download it first: hf download {spec} --local-dir DIR")
    manifest = runs.read_manifest(target)
    if manifest and manifest.get("adapter"):
        return merge_lora(target, work / f"{label}-merged", trust_remote_code=trust_remote_code, quiet=True)
    return Path(target)


def origin(spec, folder: Path) -> dict:
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
    with runs.new_folder(out, overwrite=overwrite, inputs=[target]) as tmp:
        loaded = models.load(models.ModelConfig(name_or_path=str(target), dtype="float32",
                                                trust_remote_code=trust_remote_code), device="cpu")
        model = loaded.model
        if hasattr(model, models.REWARD_HEAD):  # the head is stored on its own, as `medtune rm` stores it
            delattr(model, models.REWARD_HEAD)
        base = Path(loaded.base) if Path(loaded.base).is_dir() else None
        dtype = _config_dtype(read_config(base)) if base else None
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
        write_manifest(tmp, record)
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
    auto_map = read_config(base).get("auto_map")
    config = read_config(dst)
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


def check_alpha(value, label: str) -> float:
    """`value` as a float in [0, 1], else a MedtuneError naming `label`."""
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
    lower = check_alpha(alpha, "alpha") if alpha_lower is None else check_alpha(alpha_lower, "alpha_lower")
    upper = check_alpha(alpha, "alpha") if alpha_upper is None else check_alpha(alpha_upper, "alpha_upper")
    layered = alpha_lower is not None or alpha_upper is not None or split_layer is not None
    out = Path(out)
    runs.check_new_folder(out, overwrite=overwrite, inputs=[base, tuned])
    with runs.scratch_folder(out) as work:
        base_dir = materialise(base, work, "base", trust_remote_code=trust_remote_code)
        tuned_dir = materialise(tuned, work, "tuned", trust_remote_code=trust_remote_code)
        return average_folders(base_dir, tuned_dir, out, lower, upper, split_layer if layered else None,
                               layered=layered, inputs={"base": origin(base, base_dir), "tuned": origin(tuned, tuned_dir)},
                               overwrite=overwrite, shard_bytes=shard_bytes, quiet=quiet)


def average_folders(base_dir: Path, tuned_dir: Path, out: Path, lower: float, upper: float, split_layer, *,
                    layered: bool, inputs: dict, overwrite: bool, shard_bytes: int, quiet: bool) -> Path:
    """`average` of two folders of full weights (already materialised); `inputs` is what the manifest records."""
    labels = [f"base ({inputs['base']['spec']})", f"tuned ({inputs['tuned']['spec']})"]
    record = {"stage": "merge", "method": "average", "status": "completed", "created": runs.now(), "adapter": False,
              "inputs": inputs, "model": {**inputs["tuned"]}}
    if layered:
        layers = _layer_count(Weights(tuned_dir, labels[1]).names)
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

    with runs.new_folder(out, overwrite=overwrite, inputs=[base_dir, tuned_dir]) as tmp:
        counts = combine([base_dir, tuned_dir], labels, coefficients, tmp, ref=1, shard_bytes=shard_bytes, quiet=quiet)
        record["written"] = counts
        write_manifest(tmp, record)
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
    runs.check_new_folder(out, overwrite=overwrite, inputs=specs)
    with runs.scratch_folder(out) as work:
        folders = [materialise(m, work, f"model{i + 1}", trust_remote_code=trust_remote_code)
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
    inputs = [origin(s, f) for s, f in zip(specs, folders)]
    manifest = {"stage": "merge", "status": "completed", "created": runs.now(), "adapter": False, **record,
                "inputs": {"models": inputs}, "model": {**inputs[0]}}
    with runs.new_folder(out, overwrite=overwrite, inputs=folders) as tmp:
        counts = combine(folders, labels, lambda name: coeffs, tmp, ref=0, shard_bytes=shard_bytes, quiet=quiet)
        manifest["written"] = counts
        write_manifest(tmp, manifest)
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
    runs.check_new_folder(out, overwrite=overwrite, inputs=specs)
    with runs.scratch_folder(out) as work:
        folders = [materialise(m, work, f"model{i + 1}", trust_remote_code=trust_remote_code)
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
