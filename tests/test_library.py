"""mtfilter used from someone else's code: the README's examples, verbatim."""

import json
import re

from tests.helpers import REPO


def run_readme_example(opening: str, epochs: int | None = None) -> dict:
    """Run the README's python block that starts with the comment `opening` (its 300 epochs
    cut to `epochs`); returns its namespace."""
    readme = (REPO / "README.md").read_text()
    example = re.search(rf"```python\n({re.escape(opening)}.*?)```", readme, re.DOTALL)
    assert example, f"README lost its example {opening!r}"
    script = example.group(1)
    if epochs is not None:
        script = script.replace("max_epochs=300", f"max_epochs={epochs}")
        assert script != example.group(1)
    namespace: dict = {}
    exec(script, namespace)
    return namespace


def test_readme_plain_pytorch_example_runs_and_learns():
    namespace = run_readme_example("# plain PyTorch")
    assert namespace["losses"][-1] < namespace["losses"][0]


def test_readme_plain_trainer_script_writes_what_a_fit_writes(run_dir):
    namespace = run_readme_example("# Lightning: a plain Trainer", epochs=20)
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
    namespace = run_readme_example("# your own data", epochs=30)
    test = namespace["test"]
    for seed in (0, 1):
        summary = json.loads((run_dir / f"seed_{seed}" / "summary.json").read_text())
        # trainer.test at the best checkpoint: the summary's test split, to float32 rounding
        assert (
            abs(test[f"seed_{seed}/test/bit_error"] - summary["splits"]["test"]["bit_error"]) < 1e-6
        )
        assert 0 < test[f"seed_{seed}/test/f1_micro"] <= 1
        assert len(summary["splits"]["train"]["f1_per_bit"]) == 5
