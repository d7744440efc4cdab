"""Data: the file formats (formats.py) over the JSON reading layer (jsonio.py), chat templates (templates.py),
sequence packing (packing.py), mixing, preference pairs, cleaning, de-identification, stats and vocabulary.

`resolve_path` (`medtune:demo/...` names a shipped file) is defined at the package root, medtune/__init__.py;
it is named here too because every data reader takes such paths."""

from medtune import ASSET_PREFIX, resolve_path

__all__ = ["ASSET_PREFIX", "resolve_path"]
