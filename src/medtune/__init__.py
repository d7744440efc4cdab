"""medtune: turn an open LLM into a medical model - PT, SFT, alignment, evaluation, serving."""

from __future__ import annotations

__version__ = "0.1.0"

NOT_MEDICAL_ADVICE = (
    "medtune models are research software. Their answers are not medical advice: "
    "do not use them to diagnose or treat anyone; ask a qualified clinician."
)

ASSET_PREFIX = "medtune:"


def resolve_path(path: str) -> str:
    """`medtune:demo/sft.jsonl` names a file shipped inside the package (src/medtune/assets/); other paths pass.

    Here, at the root, because recipes (config.py) and data files (data/) both use it and config sits below data."""
    if str(path).startswith(ASSET_PREFIX):
        from importlib.resources import files
        from pathlib import Path

        return str(Path(str(files("medtune") / "assets")) / str(path)[len(ASSET_PREFIX):])
    return str(path)
