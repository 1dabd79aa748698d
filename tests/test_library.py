"""mtfilter used from someone else's code: the README's examples, verbatim."""

import json
import re

from tests.helpers import REPO


def test_readme_plain_pytorch_example_runs_and_learns():
    readme = (REPO / "README.md").read_text()
    example = re.search(r"```python\n(# plain PyTorch.*?)```", readme, re.DOTALL)
    assert example, "README lost its plain-PyTorch example"
    namespace: dict = {}
    exec(example.group(1), namespace)
    assert namespace["losses"][-1] < namespace["losses"][0]


def test_readme_plain_trainer_script_writes_what_a_fit_writes(run_dir):
    readme = (REPO / "README.md").read_text()
    example = re.search(r"```python\n(# Lightning: a plain Trainer.*?)```", readme, re.DOTALL)
    assert example, "README lost its plain-Trainer example"
    script = example.group(1).replace("max_epochs=300", "max_epochs=20")
    assert script != example.group(1)
    namespace: dict = {}
    exec(script, namespace)
    assert len(namespace["bit_error"]) == 2 and all(1 <= e <= 20 for e in namespace["epoch"])
    for seed in (0, 1):
        summary = json.loads((run_dir / f"seed_{seed}" / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["epochs"] == 20
    assert (run_dir / "checkpoints" / "best.ckpt").is_file()
    # the last epoch's figures, where Lightning users look for them
    metrics = namespace["trainer"].callback_metrics
    assert float(metrics["seed_1/val/loss"]) == float(
        namespace["model"].epoch_log.latest("val/loss")[1]
    )


def test_readme_own_data_script_reports_the_test_split_at_the_best_epoch(run_dir):
    readme = (REPO / "README.md").read_text()
    example = re.search(r"```python\n(# your own data.*?)```", readme, re.DOTALL)
    assert example, "README lost its own-data example"
    script = example.group(1).replace("max_epochs=300", "max_epochs=30")
    assert script != example.group(1)
    namespace: dict = {}
    exec(script, namespace)
    test = namespace["test"]
    for seed in (0, 1):
        summary = json.loads((run_dir / f"seed_{seed}" / "summary.json").read_text())
        # trainer.test at the best checkpoint: the summary's test split, to float32 rounding
        assert (
            abs(test[f"seed_{seed}/test/bit_error"] - summary["splits"]["test"]["bit_error"]) < 1e-6
        )
        assert 0 < test[f"seed_{seed}/test/f1_micro"] <= 1
        assert len(summary["splits"]["train"]["f1_per_bit"]) == 5
