"""pytest set-up for fgbg's Python tests: use the package built in place in python/ (by
`python/setup.py build_ext --inplace`, as the ctest does) unless FGBG_PY_INSTALLED=1 asks for the
installed one."""
import os
import sys

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
if os.environ.get("FGBG_PY_INSTALLED") != "1":
    sys.path.insert(0, os.path.join(ROOT, "python"))

import torch  # noqa: E402

torch.set_num_threads(1)
DATA = os.path.join(ROOT, "tests", "data")


@pytest.fixture
def data_dir():
    return DATA
