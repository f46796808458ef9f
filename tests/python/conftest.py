"""pytest set-up for fgbg's Python tests. The package comes from FGBG_PY_PATH when set (the ctest
sets it to the package built in the build tree), else from python/ built in place
(`python/setup.py build_ext --inplace`), or, with FGBG_PY_INSTALLED=1, from the installed one."""
import os
import sys

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
if os.environ.get("FGBG_PY_PATH"):
    sys.path.insert(0, os.environ["FGBG_PY_PATH"])
elif os.environ.get("FGBG_PY_INSTALLED") != "1":
    sys.path.insert(0, os.path.join(ROOT, "python"))

import torch  # noqa: E402

torch.set_num_threads(1)
DATA = os.path.join(ROOT, "tests", "data")


@pytest.fixture
def data_dir():
    return DATA
