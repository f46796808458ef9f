"""The README's and docs/python.md's Python snippets run as they are."""
import os
import re

import pytest

from conftest import ROOT


def _python_blocks(path, section=None):
    with open(path) as f:
        text = f.read()
    if section:
        text = text.split(section, 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", text, re.S)


@pytest.mark.parametrize("path,section", [("README.md", "## Python"),
                                          (os.path.join("docs", "python.md"), "## Use")])
def test_snippet_runs(path, section):
    blocks = _python_blocks(os.path.join(ROOT, path), section)
    assert blocks
    scope = {}
    exec(compile(blocks[0], path, "exec"), scope)
    assert scope["logits"].grad is not None and scope["logits"].grad.shape == (1000, 80)
