"""The sweep: planning (grid, names, stacking, checks), running, resuming, failures, clusters."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from mtfilter import ConfigError
from mtfilter.cli.main import cli_main
from mtfilter.cli.sweep_report import sweep_or_report as sweep_main
from mtfilter.sweep import plan
from mtfilter.sweep._grid import Run, distinct_names, expand_grid, run_name
from mtfilter.sweep._state import RunLock, is_locked
from tests.helpers import REPO, TINY, read_scalars


def write_sweep(folder: Path, grid: dict, **extra) -> Path:
    config = {
        "base": str(TINY),
        "folder": str(folder / "sweep"),
        "settings": {"trainer.max_epochs": 5},
        "grid": grid,
        # 5 epochs converge nowhere: the report keeps and marks them rather than leaving them out
        "report": {"unconverged": "mark"},
        **extra,
    }
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def states(sweep_folder: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sweep_folder.glob("*/run.json")}


def test_grid_expands_to_every_combination_in_axis_order():
    points = expand_grid({"model.hidden_dim": [8, 16], "model.layout": ["st", "mt"]})
    assert points == [
        {"model.hidden_dim": 8, "model.layout": "st"},
        {"model.hidden_dim": 8, "model.layout": "mt"},
        {"model.hidden_dim": 16, "model.layout": "st"},
        {"model.hidden_dim": 16, "model.layout": "mt"},
    ]


def test_a_list_of_grids_is_their_union():
    grids = [
        {"model.hidden_dim": [8], "model.layout": ["st", "mt"], "seed_everything": [0, 1]},
        {"model.hidden_dim": [64], "model.layout": ["mt"]},
    ]
    assert len(expand_grid(grids)) == 5
    runs = plan(TINY, grids, {}, "auto", "cpu")
    assert {run.name: run.seeds for run in runs} == {
        "hidden_dim=8-layout=st": [0, 1],
        "hidden_dim=8-layout=mt": [0, 1],
        "hidden_dim=64-layout=mt": [],
    }


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        ({}, "grid is empty"),
        ([], "grid is empty"),
        ({"model.hidden_dim": []}, "non-empty list"),
        ({"model.hidden_dim": [8, 8]}, "repeats a value"),
        ([{"model.hidden_dim": [8]}, {"model.hidden_dim": [8, 16]}], "twice"),
    ],
    ids=["no-axes", "no-grids", "empty-axis", "repeated", "overlapping-grids"],
)
def test_bad_grids_are_refused(grid, message):
    with pytest.raises(ConfigError, match=message):
        expand_grid(grid)


def test_run_names_are_readable_and_unique():
    assert run_name({"model.hidden_dim": 8, "model.layout": "st"}) == "hidden_dim=8-layout=st"
    adam = {"class_path": "torch.optim.Adam", "init_args": {"lr": 0.003}}
    assert run_name({"model.optimizer": adam}) == "optimizer=Adam,lr=0.003"
    # two axes ending alike keep their full keys
    assert run_name({"model.seeds": 1, "data.seeds": 2}) == "model.seeds=1-data.seeds=2"
    assert "/" not in run_name({"x.path": "a/b c"})


# Values that a readable name shortens: floats past 6 digits, class paths, characters that are
# not filename-safe, ints and floats that print alike.
_values = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(-3, 3),
    st.text("ab/ -.", max_size=3),
    st.sampled_from(["torchjd.aggregation.Mean", "mypkg.Mean"]).map(lambda c: {"class_path": c}),
)
_points = st.lists(
    st.dictionaries(st.sampled_from(["model.lr", "data.lr", "model.x"]), _values, min_size=1),
    max_size=8,
    unique_by=lambda point: json.dumps(point, sort_keys=True),
)


@given(_points)
def test_run_folders_are_one_to_one_with_grid_points(points):
    runs = distinct_names([Run(name=run_name(p), values=p, seeds=[]) for p in points])
    assert len({run.name for run in runs}) == len(runs)
    # the first point under a readable name keeps it: folders that exist are never renamed
    firsts = {}
    for point in points:
        firsts.setdefault(run_name(point), point)
    assert {run.name for run in runs} >= set(firsts)


def test_points_that_print_alike_get_their_own_folders_and_one_fit_is_never_run_twice():
    runs = plan(TINY, {"model.optimizer.init_args.lr": [0.0003, 0.00030000001]}, {}, "auto")
    assert runs[0].name == "lr=0.0003" and runs[1].name.startswith("lr=0.0003-")
    # the same fit under two names (a class path and its re-export, say) is refused
    grid = {"model.layout": ["mt", "st"], "model.hidden_dim": [8]}
    same = [grid, {"model.layout": ["mt"], "model.hidden_dim": [8], "data.num_bits": [4]}]
    with pytest.raises(ConfigError, match="give the same fit configuration"):
        plan(TINY, same, {}, "auto")


def test_seeds_as_an_axis_are_stacked_when_small_and_split_when_large():
    grid = {"model.hidden_dim": [4, 128], "model.layout": ["st"], "seed_everything": [0, 1]}
    runs = {run.name: run for run in plan(TINY, grid, {}, "auto", "cpu")}
    assert runs["hidden_dim=4-layout=st"].seeds == [0, 1]  # small: stacked
    assert "data.seeds" in runs["hidden_dim=4-layout=st"].settings
    assert runs["hidden_dim=128-layout=st-seed_everything=1"].seeds == [1]  # large: one each
    forced = plan(TINY, grid, {}, True, "cpu")
    assert [run.seeds for run in forced] == [[0, 1], [0, 1]]
    split = plan(TINY, grid, {}, False, "cpu")
    assert len(split) == 4


def test_a_run_planned_again_in_one_process_is_not_resolved_again(monkeypatch, tmp_path):
    # each wave of select-then-confirm plans the earlier waves' runs again
    import mtfilter.train.preflight

    built = []
    real = mtfilter.train.preflight.PreflightCLI
    monkeypatch.setattr(
        mtfilter.train.preflight, "PreflightCLI", lambda *a, **k: built.append(1) or real(*a, **k)
    )
    base = tmp_path / "base.yaml"
    base.write_bytes(TINY.read_bytes())
    grid = {"model.hidden_dim": [4, 6], "model.optimizer.init_args.lr": [0.01]}
    first = plan(base, grid, {}, "auto", "cpu")
    assert len(built) == 2
    again = plan(base, grid, {}, "auto", "cpu")
    assert len(built) == 2 and [r.config for r in again] == [r.config for r in first]
    base.write_text(TINY.read_text() + "\n# an edit\n")  # another base file: resolved anew
    plan(base, grid, {}, "auto", "cpu")
    assert len(built) == 4


def test_every_run_is_resolved_and_checked_before_anything_starts():
    with pytest.raises(ConfigError, match="hiden_dim"):
        plan(TINY, {"model.hiden_dim": [8]}, {}, "auto")
    with pytest.raises(ConfigError, match="hidden_dim=0.*hidden_dim must be at least 1"):
        plan(TINY, {"model.hidden_dim": [8, 0]}, {}, "auto")
    with pytest.raises(ConfigError, match="does not exist"):
        plan(TINY.parent / "nope.yaml", {"model.hidden_dim": [8]}, {}, "auto")


@pytest.mark.slow
def test_sweep_runs_reports_and_leaves_rerunnable_configs(run_dir):
    tmp_path = run_dir
    config = write_sweep(tmp_path, {"model.hidden_dim": [4, 8], "model.layout": ["st", "mt"],
                                    "seed_everything": [0, 1]})  # fmt: skip
    assert sweep_main(["sweep", "--config", str(config)]) == 0
    folder = tmp_path / "sweep"
    assert {s["status"] for s in states(folder).values()} == {"completed"}
    rows = (folder / "results.csv").read_text().splitlines()
    assert len(rows) == 1 + 8  # a row per point: stacked replicas count as their own runs
    for name in ("results.md", "loss_vs_width.png", "gap_vs_width.png", "loss_vs_parameters.png",
                 "curves.png"):  # fmt: skip
        assert (folder / name).is_file(), name
    assert "hidden_dim 4:" in (folder / "results.md").read_text()
    # a run's resolved config runs alone with `mtfilter fit --config`
    run = cli_main(
        [
            "fit",
            "--config",
            str(folder / "hidden_dim=4-layout=st" / "fit.yaml"),
            "--trainer.max_epochs",
            "1",
            "--trainer.enable_model_summary",
            "false",
        ]
    )
    assert run.model.hparams.hidden_dim == 4 and run.model.hparams.seeds == [0, 1]


@pytest.mark.slow
def test_running_again_finishes_only_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = write_sweep(tmp_path, {"model.hidden_dim": [4, 8], "model.layout": ["mt"]})
    assert sweep_main(["sweep", "--config", str(config)]) == 0
    folder = tmp_path / "sweep"
    summary = folder / "hidden_dim=8-layout=mt" / "summary.json"
    first = json.loads(summary.read_text())
    summary.unlink()  # as if it never finished: its last.ckpt is after the final epoch
    assert sweep_main(["sweep", "--config", str(config)]) == 0
    attempts = {name: s["attempts"] for name, s in states(folder).items()}
    assert attempts == {"hidden_dim=4-layout=mt": 1, "hidden_dim=8-layout=mt": 2}
    again = json.loads(summary.read_text())  # rewritten from the checkpoint's records
    assert again["val"] == first["val"] and again["epochs"] == first["epochs"] == 5
    assert again["wall_time_s"] > 0  # the training time the checkpoint recorded


@pytest.mark.slow
def test_a_failing_run_is_recorded_and_the_others_finish(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    exploding = {"class_path": "torch.optim.SGD", "init_args": {"lr": 1e30}}
    fine = {"class_path": "torch.optim.Adam", "init_args": {"lr": 0.01}}
    config = write_sweep(tmp_path, {"model.optimizer": [fine, exploding]},
                         settings={"trainer.max_epochs": 5, "model.loss": "bce"})  # fmt: skip
    assert sweep_main(["sweep", "--config", str(config)]) == 1
    found = states(tmp_path / "sweep")
    assert found["optimizer=Adam,lr=0.01"]["status"] == "completed"
    failed = found["optimizer=SGD,lr=1e+30"]
    assert failed["status"] == "diverged" and "NonFiniteLossError" in failed["error"]
    assert "1 of 2 runs failed" in capsys.readouterr().err
    assert "did not complete" in (tmp_path / "sweep" / "results.md").read_text()


@pytest.mark.slow
def test_a_folder_holding_another_sweep_is_refused_untouched(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = write_sweep(tmp_path, {"model.hidden_dim": [4]})
    assert sweep_main(["sweep", "--config", str(first)]) == 0
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "sweep").rglob("*")}
    other = write_sweep(tmp_path, {"model.hidden_dim": [4]},
                        settings={"trainer.max_epochs": 6})  # fmt: skip
    with pytest.raises(ConfigError, match=r"different sweep.*differs in trainer\.max_epochs"):
        sweep_main(["sweep", "--config", str(other)])
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "sweep").rglob("*")} == before
    # the same settings written in another key order (another mtfilter version): the same run
    run = tmp_path / "sweep" / "hidden_dim=4"
    reordered = yaml.safe_dump(yaml.safe_load((run / "fit.yaml").read_text()), sort_keys=True)
    assert reordered != (run / "fit.yaml").read_text()
    (run / "fit.yaml").write_text(reordered)
    state = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**state, "config_digest": "from-another-text"}))
    summary = (run / "summary.json").stat().st_mtime_ns
    first = write_sweep(tmp_path, {"model.hidden_dim": [4]})  # `other` wrote over the file
    assert sweep_main(["sweep", "--config", str(first)]) == 0
    assert (run / "summary.json").stat().st_mtime_ns == summary  # not run again
    # made before an option existed (an upgrade since added `model.residual`, default off): the
    # same run, as long as the sweep does not set the new option
    recorded = yaml.safe_load((run / "fit.yaml").read_text())
    del recorded["model"]["residual"]
    (run / "fit.yaml").write_text(yaml.safe_dump(recorded))
    assert sweep_main(["sweep", "--config", str(first)]) == 0
    assert (run / "summary.json").stat().st_mtime_ns == summary
    sets_it = {"trainer.max_epochs": 5, "model.residual": False}
    setting_it = write_sweep(tmp_path, {"model.hidden_dim": [4]}, settings=sets_it)
    with pytest.raises(ConfigError, match=r"differs in model\.residual\)"):
        sweep_main(["sweep", "--config", str(setting_it)])
    assert (run / "summary.json").stat().st_mtime_ns == summary
    # made under another default of an option that chooses how, not what, a run computes (the
    # gradients' path): the same run, unless the sweep sets that option
    recorded["model"]["gradients"] = "explicit"
    (run / "fit.yaml").write_text(yaml.safe_dump(recorded))
    first = write_sweep(tmp_path, {"model.hidden_dim": [4]})
    assert sweep_main(["sweep", "--config", str(first)]) == 0
    assert (run / "summary.json").stat().st_mtime_ns == summary
    sets_it = {"trainer.max_epochs": 5, "model.gradients": "autograd"}
    setting_it = write_sweep(tmp_path, {"model.hidden_dim": [4]}, settings=sets_it)
    with pytest.raises(ConfigError, match=r"differs in model\.gradients\)"):
        sweep_main(["sweep", "--config", str(setting_it)])
    assert (run / "summary.json").stat().st_mtime_ns == summary
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not a sweep folder"):
        sweep_main(["sweep", "--config", str(first), "--folder", str(tmp_path / "plain")])


def test_bad_sweep_input_stops_before_anything_is_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="hiden_dim"):
        sweep_main(["sweep", "--config", str(write_sweep(tmp_path, {"model.hiden_dim": [4]}))])
    with pytest.raises(ConfigError, match="non-empty list"):
        sweep_main(["sweep", "--config", str(write_sweep(tmp_path, {"model.hidden_dim": []}))])
    missing = write_sweep(tmp_path, {"model.hidden_dim": [4]}, base=str(tmp_path / "gone.yaml"))
    with pytest.raises(ConfigError, match="gone.yaml"):
        sweep_main(["sweep", "--config", str(missing)])
    assert not (tmp_path / "sweep").exists()


def test_dry_run_lists_runs_and_commands_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    config = write_sweep(tmp_path, {"model.hidden_dim": [4, 8], "seed_everything": [0, 1]})
    assert sweep_main(["sweep", "--config", str(config), "--dry_run", "true"]) == 0
    printed = capsys.readouterr().out
    assert "2 runs" in printed and printed.count("mtfilter fit --config") == 2
    assert "--data.seeds '[0, 1]'" in printed
    assert not (tmp_path / "sweep").exists()


def test_a_report_include_is_checked_and_a_study_not_yet_run_is_named_before_any_run(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    grid = {"model.hidden_dim": [4]}
    later = {"unconverged": "mark", "include": [{"folder": "sweeps/other"}]}
    config = write_sweep(tmp_path, grid, report=later)
    assert sweep_main(["sweep", "--config", str(config), "--dry_run", "true"]) == 0
    assert "includes sweeps/other, which has no sweep yet" in capsys.readouterr().err
    wrong = write_sweep(tmp_path, grid, report={"include": [{"path": "sweeps/other"}]})
    with pytest.raises(ConfigError, match="include entries"):
        sweep_main(["sweep", "--config", str(wrong), "--dry_run", "true"])


@pytest.mark.slow
def test_submitit_local_mode_runs_the_sweep(tmp_path, monkeypatch):
    pytest.importorskip("submitit")
    monkeypatch.chdir(tmp_path)
    config = write_sweep(tmp_path, {"model.hidden_dim": [4, 8]}, executor="submitit",
                         submitit={"cluster": "local", "timeout_min": 10})  # fmt: skip
    assert sweep_main(["sweep", "--config", str(config)]) == 0
    assert {s["status"] for s in states(tmp_path / "sweep").values()} == {"completed"}
    assert list((tmp_path / "sweep" / "submitit").iterdir())  # submitit's own job files


def callback(name: str, **init_args: object) -> dict:
    """A callback of tests.helpers.signals.py as a fit setting."""
    return {"class_path": f"tests.helpers.signals.{name}", "init_args": init_args}


def sweep_command(config: Path) -> list[str]:
    return [sys.executable, "-m", "mtfilter.cli", "sweep", "--config", str(config)]


# The sweep and its fits import tests.helpers.signals
SWEEP_ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def run_sweep(config: Path) -> subprocess.CompletedProcess:
    return subprocess.run(sweep_command(config), cwd=config.parent, env=SWEEP_ENV,
                          capture_output=True, text=True, timeout=600)  # fmt: skip


def epochs_logged(folder: Path) -> list[int]:
    return [step for step, _ in read_scalars(folder)["val/loss"]]


def interrupted_sweep(
    tmp_path: Path, name: str, epochs: int, exit_status: int = 130, **init_args: object
) -> tuple:
    """A sweep of hidden 4 and 8, one run at a time, that the callback `name` Ctrl-Cs (or
    signals): it exits `exit_status`. Returns its config and folder."""
    ctrl_c = callback(name, flag=str(tmp_path / "interrupted"), **init_args)
    config = write_sweep(
        tmp_path,
        {"model.hidden_dim": [4, 8]},
        workers=1,
        settings={"trainer.max_epochs": epochs, "trainer.callbacks": [ctrl_c]},
    )
    first = run_sweep(config)
    assert first.returncode == exit_status, first.stderr[-2000:]
    return config, tmp_path / "sweep"


@pytest.mark.slow
@pytest.mark.parametrize(("name", "said"), [("SIGINT", "Ctrl-C"), ("SIGTERM", "SIGTERM")])
def test_interrupting_a_sweep_then_running_it_again_finishes_only_the_rest(tmp_path, name, said):
    """Ctrl-C, or the SIGTERM a scheduler sends a sweep that runs inside a job: passed on."""
    status = 128 + getattr(signal, name)
    config, folder = interrupted_sweep(tmp_path, "CtrlCTheSweep", epochs=30, at_epoch=3,
                                       signal=name, exit_status=status)  # fmt: skip
    found = states(folder)
    # largest first, one at a time: hidden 8 was running and stopped cleanly, 4 never started
    assert found["hidden_dim=8"]["status"] == "stopped"
    assert found["hidden_dim=8"]["error"].startswith(f"stopped by {said}")  # as it ended
    assert found["hidden_dim=4"]["status"] == "pending"
    # the fit's StopOnInterrupt runs after the callback that waited for the Ctrl-C to arrive
    assert json.loads((folder / "hidden_dim=8" / "summary.json").read_text())["epochs"] == 3
    second = run_sweep(config)
    assert second.returncode == 0, second.stderr[-2000:]
    found = states(folder)
    assert {s["status"] for s in found.values()} == {"completed"}
    assert {name: s["attempts"] for name, s in found.items()} == {
        "hidden_dim=8": 2,  # continued from its last.ckpt
        "hidden_dim=4": 1,
    }
    assert epochs_logged(folder / "hidden_dim=8") == list(range(1, 31))  # each epoch once


@pytest.mark.slow
def test_a_ctrl_c_that_lands_after_a_fit_finished_leaves_it_completed(tmp_path):
    config, folder = interrupted_sweep(tmp_path, "CtrlCTheSweepAfterFinishing", epochs=5)
    finished = states(folder)["hidden_dim=8"]
    assert finished["history"][-1]["exit_code"] == -signal.SIGINT  # its process died of it...
    assert finished["status"] == "completed" and finished["error"] is None  # ...after finishing
    second = run_sweep(config)
    assert second.returncode == 0, second.stderr[-2000:]
    found = states(folder)
    assert {name: (s["status"], s["attempts"]) for name, s in found.items()} == {
        "hidden_dim=8": ("completed", 1),  # not run again
        "hidden_dim=4": ("completed", 1),
    }
    assert "(2 completed)" in (folder / "results.md").read_text()


@pytest.mark.slow
def test_a_run_state_that_contradicts_the_fits_summary_is_mended(tmp_path, monkeypatch):
    """The state an interrupted sweep used to leave: the fit completed, run.json says stopped
    with the fit's console output as its error."""
    monkeypatch.chdir(tmp_path)
    config = write_sweep(tmp_path, {"model.hidden_dim": [4, 8]})
    assert sweep_main(["sweep", "--config", str(config)]) == 0
    run_file = tmp_path / "sweep" / "hidden_dim=8" / "run.json"
    stuck = json.loads(run_file.read_text())
    stuck.update(status="stopped", error="  | Name | Type   | Params | Mode  | FLOPs")
    run_file.write_text(json.dumps(stuck))
    assert sweep_main(["sweep", "--config", str(config)]) == 0
    mended = json.loads(run_file.read_text())
    assert mended["status"] == "completed" and mended["error"] is None
    assert mended["attempts"] == 1  # the summary says it finished: not run again
    assert "(2 completed)" in (tmp_path / "sweep" / "results.md").read_text()


@pytest.mark.slow
def test_a_sweep_killed_hard_then_run_again_never_writes_a_run_twice(tmp_path):
    release = tmp_path / "release"
    kill = callback("KillTheSweep", flag=str(tmp_path / "killed"), release=str(release),
                    at_epoch=3)  # fmt: skip
    config = write_sweep(
        tmp_path,
        {"model.hidden_dim": [4, 8]},
        workers=1,
        settings={"trainer.max_epochs": 20, "trainer.callbacks": [kill]},
    )
    first = run_sweep(config)
    assert first.returncode == -signal.SIGKILL
    folder = tmp_path / "sweep"
    assert states(folder)["hidden_dim=8"]["status"] == "running"  # its fit lives on, an orphan
    second = subprocess.Popen(
        sweep_command(config),
        cwd=tmp_path,
        env=SWEEP_ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    printed = []
    for line in second.stdout:  # the second sweep sees the orphan's lock and waits
        printed.append(line)
        if line.startswith("waiting: hidden_dim=8"):
            break
    release.touch()  # the orphan goes on and finishes; then the second sweep takes over
    printed.append(second.communicate(timeout=600)[0])
    assert second.returncode == 0, "".join(printed)[-3000:]
    assert any(line.startswith("waiting: hidden_dim=8") for line in printed)
    found = states(folder)
    assert {name: (s["status"], s["attempts"]) for name, s in found.items()} == {
        "hidden_dim=8": ("completed", 1),  # trained once, by the orphan alone
        "hidden_dim=4": ("completed", 1),
    }
    assert epochs_logged(folder / "hidden_dim=8") == list(range(1, 21))


def test_a_run_folder_lock_is_held_by_one_live_process_and_freed_when_it_ends(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; "
         "from mtfilter.sweep._state import RunLock; lock = RunLock(Path(sys.argv[1])); "
         "print(lock.acquire(), flush=True); time.sleep(60)", str(tmp_path)],
        stdout=subprocess.PIPE, text=True, env=SWEEP_ENV,
    )  # fmt: skip
    assert holder.stdout.readline().strip() == "True"
    assert is_locked(tmp_path) and not RunLock(tmp_path).acquire()
    assert RunLock(tmp_path).owner() == holder.pid
    holder.kill()
    holder.wait()
    mine = RunLock(tmp_path)
    assert not is_locked(tmp_path) and mine.acquire()  # a dead holder's lock is taken over
    mine.release()


def test_methods_as_an_axis_are_built_and_checked_before_anything_starts():
    upgrad = {"class_path": "torchjd.aggregation.UPGrad"}
    runs = plan(TINY, {"model.aggregator": [upgrad]}, {}, "auto", "cpu")
    assert [run.name for run in runs] == ["aggregator=UPGrad"]
    assert runs[0].cost > plan(TINY, {"model.hidden_dim": [8]}, {}, "auto", "cpu")[0].cost
    uw = {"class_path": "torchjd.scalarization.UW", "init_args": {"shape": 10}}
    with pytest.raises(ConfigError, match="give it init_args.shape: 4"):  # tiny has 4 bits
        plan(TINY, {"model.scalarizer": [uw]}, {}, "auto", "cpu")
    with pytest.raises(ConfigError, match="Aggregator"):
        plan(TINY, {"model.aggregator": [{"class_path": "torch.nn.Linear"}]}, {}, "auto", "cpu")


@pytest.mark.parametrize("has_checkpoint", [True, False], ids=["checkpoint", "none-yet"])
def test_a_stopped_runs_record_says_whether_it_resumes_or_starts_anew(
    tmp_path, monkeypatch, has_checkpoint
):
    """A fit stopped by Ctrl-C (here: a process that ends by SIGINT at once) before or after
    writing its first last.ckpt."""
    from mtfilter.sweep import _execute
    from mtfilter.sweep._state import RunState

    folder = tmp_path / "run"
    RunState("run", {}, [0], {}, "digest", 1, 1.0).save(folder)
    if has_checkpoint:
        (folder / "checkpoints").mkdir()
        (folder / "checkpoints" / "last.ckpt").write_bytes(b"")
    ended_by_sigint = [
        sys.executable,
        "-c",
        # the sleep lets the handler run: without it the interpreter may exit 0 first
        "import os, signal, time; os.kill(os.getpid(), signal.SIGINT); time.sleep(30)",
    ]
    monkeypatch.setattr(_execute, "fit_command", lambda _: ended_by_sigint)
    state = _execute.execute(folder)
    assert state is not None and state.status == "stopped"
    expected = "go on from its last.ckpt" if has_checkpoint else "before its first checkpoint"
    assert state.error.startswith("stopped by Ctrl-C: ") and expected in state.error
