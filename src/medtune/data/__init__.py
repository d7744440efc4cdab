"""Data: the file formats (formats.py), chat templates (templates.py) and sequence packing (packing.py)."""

from __future__ import annotations

from pathlib import Path

ASSET_PREFIX = "medtune:"


def resolve_path(path: str) -> str:
    """`medtune:demo/sft.jsonl` names a file shipped inside the package (src/medtune/assets/); other paths pass."""
    if str(path).startswith(ASSET_PREFIX):
        from importlib.resources import files

        return str(Path(str(files("medtune") / "assets")) / str(path)[len(ASSET_PREFIX):])
    return str(path)
