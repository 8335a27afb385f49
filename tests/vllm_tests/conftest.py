"""The vLLM tests run only where vLLM is installed: the vLLM environment made by ``bash .ci/vllm``.

(The folder is not called ``tests/vllm``: pytest puts ``tests/`` on ``sys.path``, where such a
folder would be found as a namespace package named ``vllm``.)
"""

import importlib.util
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
_spec = importlib.util.find_spec("vllm")
HAVE_VLLM = _spec is not None and _spec.origin is not None  # a namespace package has no origin


def pytest_collection_modifyitems(config, items):
    if HAVE_VLLM:
        return
    skip = pytest.mark.skip(reason="vllm is not installed here; these tests run in the vLLM environment: bash .ci/vllm")
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(skip)


def pytest_configure(config):
    # Deprecation noise from vLLM's and torch's own modules, not from ours.
    for line in ("ignore::FutureWarning:vllm", "ignore::DeprecationWarning:torch.jit"):
        config.addinivalue_line("filterwarnings", line)
