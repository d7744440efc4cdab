import os
import sys
import warnings
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MEDTUNE_SRC = str(Path(__file__).resolve().parents[1] / "src" / "medtune")


class DeprecatedCallInMedtune(AssertionError):
    """medtune's own code called an API its library deprecated: move to the new name (issue 19)."""


def _plumbing(filename: str) -> bool:
    """Frames between a deprecated API and its caller that call nothing of their own: torch's module __call__,
    dataclass-generated __init__, functools wrappers, a deprecation decorator, a TRL config's __post_init__."""
    return (filename.endswith(("torch/nn/modules/module.py", "functools.py", "/deprecation.py"))
            or filename == "<string>" or ("/trl/" in filename and filename.endswith("_config.py")))


def _medtune_caller(frame) -> str | None:
    """The medtune line that called the deprecated API directly (through plumbing only), or None when the
    caller is another library's internals (not ours to act on)."""
    frame = frame.f_back  # the deprecated function's caller
    while frame is not None and _plumbing(frame.f_code.co_filename):
        frame = frame.f_back
    if frame is not None and frame.f_code.co_filename.startswith(MEDTUNE_SRC):
        return f"src/medtune{frame.f_code.co_filename[len(MEDTUNE_SRC):]}:{frame.f_lineno}"
    return None


_warn = warnings.warn


def _warn_unless_medtune_calls_a_deprecated_api(message, category=None, stacklevel=1, source=None, **kw):
    kind = category or (type(message) if isinstance(message, Warning) else UserWarning)
    if issubclass(kind, (DeprecationWarning, FutureWarning)):
        caller = _medtune_caller(sys._getframe(1))
        if caller:
            raise DeprecatedCallInMedtune(f"{caller} calls a deprecated API: {message}")
    return _warn(message, category, stacklevel + 1, source, **kw)


# every test: a deprecation that medtune's code triggers fails the test where it is called (pyproject's
# filterwarnings turn those attributed to medtune's modules into errors as well)
warnings.warn = _warn_unless_medtune_calls_a_deprecated_api


@pytest.fixture(scope="session")
def default_path():
    """The embedded default model's folder, or a skip when its package (a `make` install step) is missing."""
    from medtune import models

    try:
        return models.default_model_path()
    except Exception as exc:
        pytest.skip(f"embedded default model unavailable: {exc}")


@pytest.fixture
def shared_data():
    if not SHARED.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED
