"""README's file tree and docs list stay true: every file of src/, tests/, bench/ and recipes/ has its line (a
folder line covers what is inside it), every path the tree names exists, and every page in docs/ is linked."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
TREE = README.split("## Files", 1)[1]
NAMED = re.findall(r"^((?:src|tests|bench|recipes|accelerate)/\S+)", TREE, flags=re.M)


def tracked() -> list[str]:
    try:
        out = subprocess.run(["git", "ls-files", "src", "tests", "bench", "recipes"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the tracked files cannot be listed")
    return [f for f in out.splitlines() if "__pycache__" not in f and (ROOT / f).exists()]


def test_every_file_has_its_line_in_the_tree():
    folders = [n for n in NAMED if n.endswith("/")]
    missing = [f for f in tracked() if f not in NAMED and not any(f.startswith(d) for d in folders)]
    assert not missing, "README.md's file tree lacks: " + ", ".join(missing)


def test_every_path_in_the_tree_exists():
    gone = [n for n in NAMED if not (ROOT / n).exists()]
    assert not gone, "README.md's file tree names files that are gone: " + ", ".join(gone)


def test_every_docs_page_is_linked():
    pages = sorted(p.name for p in (ROOT / "docs").glob("*.md"))
    unlinked = [p for p in pages if f"(docs/{p})" not in README]
    assert not unlinked, "README.md's docs list lacks: " + ", ".join(unlinked)
