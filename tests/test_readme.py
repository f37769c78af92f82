"""Every ```python block of README.md runs verbatim: the README's library examples stay true.

Each block runs alone, in a fresh namespace, in the order the README gives them, so a reader can
copy any one of them. A block whose first line is `# not run: <why>` (one that needs a trained
work dir) is only compiled. Bash blocks are the command line and are not run here. The blocks
use small random features, so the whole file takes seconds.
"""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
NOT_RUN = "# not run:"
BLOCK = re.compile(r"^```python\n(.*?)^```$", re.DOTALL | re.MULTILINE)


def python_blocks() -> list[str]:
    return BLOCK.findall(README.read_text())


def test_the_readme_has_runnable_python_blocks():
    blocks = python_blocks()
    assert len(blocks) >= 2
    assert sum(not block.startswith(NOT_RUN) for block in blocks) >= 2


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_readme_python_block_runs(index):
    source = python_blocks()[index]
    code = compile(source, f"README.md python block {index + 1}", "exec")
    if source.startswith(NOT_RUN):
        return  # compiled only: its first line says why it cannot run here
    exec(code, {"__name__": f"readme_block_{index + 1}"})
