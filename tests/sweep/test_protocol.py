"""Select, then confirm: candidates per point, extension past edge picks, held-out seeds, and a
second run that re-runs nothing."""

import csv
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from mtfilter import ConfigError
from mtfilter.cli.sweep_report import sweep_or_report as sweep_main
from mtfilter.report._select import Choice
from mtfilter.sweep import plan
from mtfilter.sweep._protocol import Protocol, Selection
from tests.helpers import REPO, TINY

LR = "model.optimizer.init_args.lr"
GRID = {"model.hidden_dim": [4], "model.layout": ["mt"]}


def _choice(chosen: float, tried: list[float], edge: str | None, key: str = LR) -> Choice:
    return Choice(section=(), width=4, layout="mt", chosen={key: chosen}, means={}, seeds=2,
                  unconverged=0, held_out=False,
                  point={"model.hidden_dim": 4, "model.layout": "mt"},
                  edges={key: edge} if edge else {}, tried={key: tried})  # fmt: skip


def test_an_edge_pick_adds_the_next_value_by_the_candidates_own_ratio():
    protocol = Protocol(Selection({LR: [0.001, 0.003, 0.01]}, [0, 1], [2]), GRID)
    added = protocol.extend([_choice(0.01, [0.001, 0.003, 0.01], "high")])
    assert len(added) == 1 and "0.0333" in added[0]  # x 10/3, three significant digits
    assert protocol.selection_grid()[-1][LR] == [0.0333]
    protocol.extend([_choice(0.001, [0.001, 0.003, 0.01, 0.0333], "low")])
    assert protocol.selection_grid()[-1][LR] == [0.000333]
    assert protocol.extend([_choice(0.003, [0.001, 0.003, 0.01], None)]) == []  # interior


def test_extensions_stop_at_the_limits_or_after_max_extensions():
    limited = Protocol(Selection({LR: [0.01, 0.03]}, [0], [1], limits={LR: [0.001, 0.05]}), GRID)
    assert limited.extend([_choice(0.03, [0.01, 0.03], "high")]) == []  # 0.09 > 0.05
    assert limited.extend([_choice(0.01, [0.01, 0.03], "low")])  # 0.00333 >= 0.001
    capped = Protocol(Selection({LR: [0.01]}, [0], [1], max_extensions=2), GRID)
    tried = [0.01]
    for _ in range(2):  # a single candidate: x3
        (added,) = capped.extend([_choice(tried[-1], tried, "high")])
        tried.append(capped.selection_grid()[-1][LR][0])
    assert tried == [0.01, 0.03, 0.09]
    assert capped.extend([_choice(0.09, tried, "high")]) == []


def test_an_integer_candidate_extends_by_integers():
    key = "trainer.max_epochs"
    protocol = Protocol(Selection({key: [1000, 3000]}, [0], [1]), GRID)
    protocol.extend([_choice(3000, [1000, 3000], "high", key=key)])
    assert protocol.selection_grid()[-1][key] == [9000]


@pytest.mark.parametrize(
    ("selection", "grid", "message"),
    [
        (Selection({LR: [0.01]}, [0, 1], [1, 2]), GRID, "both selection and held-out"),
        (Selection({LR: [0.01]}, [0], [1]), {**GRID, LR: [0.1]}, "must not be a grid axis"),
        (Selection({LR: [0.01]}, [0], [1]), {**GRID, "seed_everything": [0]}, "grid axis"),
        (Selection({LR: [0.01, 0.01]}, [0], [1]), GRID, "repeats"),
        (Selection({LR: [0.01]}, [], [1]), GRID, "selection_seeds is empty"),
        (Selection({LR: [0.01]}, [0], [1], limits={LR: [1, 0.1]}), GRID, "lowest, highest"),
    ],
    ids=[
        "overlapping-seeds",
        "candidate-in-grid",
        "seeds-in-grid",
        "repeated",
        "no-seeds",
        "bad-limits",
    ],  # fmt: skip
)
def test_a_protocol_that_cannot_work_is_refused(selection, grid, message):
    with pytest.raises(ConfigError, match=message):
        Protocol(selection, grid)


def test_learning_rates_stack_with_seeds_where_it_pays_and_split_where_not():
    grid = {"model.hidden_dim": [4, 128], "model.layout": ["st"], LR: [0.01, 0.03],
            "seed_everything": [0, 1]}  # fmt: skip
    runs = {run.name: run for run in plan(TINY, grid, {}, "auto", "cpu")}
    small = runs["hidden_dim=4-layout=st-lr=0.01+0.03"]
    assert (small.seeds, small.learning_rates) == ([0, 1], [0.01, 0.03])
    assert small.settings["model.learning_rates"] == [0.01, 0.03]
    assert "hidden_dim=128-layout=st-lr=0.03-seed_everything=1" in runs  # large: one each
    assert len(runs) == 1 + 4
    off = plan(TINY, grid, {}, "auto", "cpu", stack_learning_rates=False)
    assert {run.name for run in off} >= {
        "hidden_dim=4-layout=st-lr=0.01",
        "hidden_dim=4-layout=st-lr=0.03",
    }  # seeds only


def test_rates_that_are_not_a_product_with_the_seeds_stack_by_rate():
    grids = [{"model.hidden_dim": [4], LR: [0.01, 0.03], "seed_everything": [0, 1]},
             {"model.hidden_dim": [4], LR: [0.1], "seed_everything": [0]}]  # fmt: skip
    runs = plan(TINY, grids, {}, "auto", "cpu")
    assert sorted((run.name, tuple(run.seeds)) for run in runs) == [
        ("hidden_dim=4-lr=0.01", (0, 1)),
        ("hidden_dim=4-lr=0.03", (0, 1)),
        ("hidden_dim=4-lr=0.1", (0,)),
    ]


def _protocol_sweep(folder: Path) -> Path:
    config = {
        "base": str(TINY),
        "folder": str(folder / "sweep"),
        "settings": {"trainer.max_epochs": 200, "model.loss": "bce", "model.hidden_dim": 4,
                     "convergence.patience": 50, "convergence.check_every": 10},
        "grid": {"model.layout": ["mt"]},
        # rates too low for 200 epochs: the highest wins, an edge, until the limit
        "select": {"candidates": {LR: [0.0003, 0.001]}, "selection_seeds": [0, 1],
                   "seeds": [2], "ratio": 3, "limits": {LR: [0.0001, 0.004]}},
    }  # fmt: skip
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.slow
def test_one_command_selects_extends_confirms_and_reports_and_a_second_re_runs_nothing(
    run_dir, capsys
):
    config = _protocol_sweep(run_dir)
    assert sweep_main(["sweep", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "extending past edge picks" in out and "0.003" in out
    folder = run_dir / "sweep"
    names = sorted(p.parent.relative_to(folder).as_posix() for p in folder.glob("*/*/run.json"))
    assert names == [
        "confirmation/layout=mt-lr=0.003",
        "selection/layout=mt-lr=0.0003+0.001",
        "selection/layout=mt-lr=0.003",
    ]
    text = (folder / "results.md").read_text()
    chosen = next(line for line in text.splitlines() if line.startswith("| 4 | mt | 2 |"))
    assert "lr=0.003" in chosen and "‡high" in chosen  # still at the edge: the limit stopped it
    assert "0.0003: " in text and "0.001: " in text and "0.003: " in text
    sweep = json.loads((folder / "sweep.json").read_text())
    assert sweep["report"]["select_key"] == [LR] and sweep["report"]["selection_seeds"] == [0, 1]
    attempts = {n: json.loads((folder / n / "run.json").read_text())["attempts"] for n in names}
    assert sweep_main(["sweep", "--config", str(config)]) == 0
    again = {n: json.loads((folder / n / "run.json").read_text())["attempts"] for n in names}
    assert again == attempts  # nothing re-ran
    assert "0 to run" in capsys.readouterr().out


def _kept_by_git(folder: Path) -> list[Path]:
    """The files under `folder` that the repository's .gitignore lets a commit hold, were the
    folder a study under lightning_logs/sweeps/."""
    files = sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file())
    as_committed = "\n".join(f"lightning_logs/sweeps/study/{p.as_posix()}" for p in files)
    ignored = subprocess.run(
        ["git", "check-ignore", "--no-index", "--stdin"], cwd=REPO, input=as_committed,
        capture_output=True, text=True, check=False,
    ).stdout.split()  # fmt: skip
    return [p for p in files if f"lightning_logs/sweeps/study/{p.as_posix()}" not in ignored]


@pytest.mark.slow
def test_a_study_committed_part_way_goes_on_in_another_clone_and_re_runs_only_the_unfinished(
    run_dir, capsys
):
    """What git keeps of a sweep folder (.gitignore: definitions, configs, states, summaries; no
    checkpoints, events or logs) is enough to go on: finished runs stay finished, a run that was
    still going restarts from its first epoch, and the report is the same."""
    config = _protocol_sweep(run_dir)
    assert sweep_main(["sweep", "--config", str(config)]) == 0
    folder = run_dir / "sweep"
    kept = _kept_by_git(folder)
    assert {p.name for p in kept} == {"sweep.json", "fit.yaml", "run.json", "summary.json"}
    assert not any(p.suffix == ".ckpt" or "tfevents" in p.name for p in kept)
    clone = run_dir / "clone"
    for path in kept:
        (clone / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(folder / path, clone / path)
    # one run as it was committed while it trained: no summary yet, its state `running`
    unfinished = clone / "confirmation" / "layout=mt-lr=0.003"
    (unfinished / "summary.json").unlink()
    state = json.loads((unfinished / "run.json").read_text())
    (unfinished / "run.json").write_text(json.dumps({**state, "status": "running"}))
    moved = yaml.safe_load(config.read_text()) | {"folder": str(clone)}
    config.write_text(yaml.safe_dump(moved))
    capsys.readouterr()
    assert sweep_main(["sweep", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "2 runs (6 replicas), 2 already finished, 0 to run" in out  # the selection's
    ran = [line.split("] ", 1)[1] for line in out.splitlines() if " done, " in line]
    assert [line.split(" (")[0] for line in ran] == ["completed confirmation/layout=mt-lr=0.003"]
    again = json.loads((unfinished / "run.json").read_text())
    assert again["status"] == "completed" and again["attempts"] == state["attempts"] + 1
    timing = ("wall_time_s", "log_dir")  # the clone's own time and folder
    old, new = (
        [{k: v for k, v in row.items() if k not in timing} for row in csv.DictReader(f.open())]
        for f in (folder / "results.csv", clone / "results.csv")
    )
    assert new == old  # the restarted run trained as before, in this process's arithmetic
