"""The README's and the documentation's code runs, and their relative links point at files that exist."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_exist(page: Path) -> None:
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
        if not re.match(r"[a-z]+://", target):
            assert (page.parent / target).exists(), f"{page.name} links to {target}, which does not exist"


PREAMBLE = {  # what a page's fragment takes as given
    "docs/opteq.md": "import torch, mondeq",
    "docs/robustness.md": "import mondeq\nfrom mondeq.data import load_dataset\nmodel = mondeq.NemonFC(hidden=16)\n"
                          "splits = load_dataset('mnist-mini', test_subset=20)\n"
                          "images, labels = splits.test_images, splits.test_labels",
}


RUN = ["README.md", "docs/python-api.md", "docs/opteq.md", "docs/robustness.md"]


def test_every_python_block_is_run() -> None:
    """A page's Python is run here (:data:`RUN`) or is an included example script, which its test runs."""
    examples = (ROOT / "tests" / "test_examples.py").read_text()
    for page in PAGES:
        name = str(page.relative_to(ROOT))
        for block in python_blocks(page):
            included = re.fullmatch(r'--8<-- "examples/(\w+)\.py"\n', block)
            assert name in RUN or (included and f'_load("{included[1]}")' in examples), \
                f"{name} has a Python block that no test runs"


@pytest.mark.parametrize("page", RUN)
def test_code_blocks_run(page: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each page's Python blocks run in order in one namespace (in a scratch folder: they may write runs/)."""
    blocks = python_blocks(ROOT / page)
    assert blocks, f"{page} has no Python code"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__docs__"}
    exec(PREAMBLE.get(page, ""), namespace)
    for block in blocks:
        exec(compile(block, f"{page} block", "exec"), namespace)
    assert os.getcwd() == str(tmp_path)
