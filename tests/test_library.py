"""mtfilter used from someone else's code: the README's plain-PyTorch example, verbatim."""

import re

from tests.conftest import REPO


def test_readme_plain_pytorch_example_runs_and_learns():
    readme = (REPO / "README.md").read_text()
    example = re.search(r"```python\n(# plain PyTorch.*?)```", readme, re.DOTALL)
    assert example, "README lost its plain-PyTorch example"
    namespace: dict = {}
    exec(example.group(1), namespace)
    assert namespace["losses"][-1] < namespace["losses"][0]
