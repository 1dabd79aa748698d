"""The report's numbers against hand-computed ones, from a sweep folder of fake summaries."""

import csv
import json
import math
import shutil
from pathlib import Path

import pytest

from mtfilter.errors import ConfigError
from mtfilter.report import Estimate, compare, report, verdict
from mtfilter.report._collect import collect
from mtfilter.report._plots import _method_styles
from mtfilter.report._stats import EpochRange
from tests.helpers.fake_sweeps import LOSSES, T_975_DF2, fake_summary, fake_sweep


def hand_estimate(values):
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = T_975_DF2 * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def test_collect_makes_one_row_per_stacked_replica(tmp_path):
    keys, rows = collect(fake_sweep(tmp_path, stacked=True))
    assert keys == ["model.hidden_dim", "model.layout", "seed_everything"]
    assert len(rows) == 12
    row = next(
        r for r in rows if r["run"] == "hidden_dim=8-layout=mt" and r["seed_everything"] == 2
    )
    assert row["val_loss_best"] == 0.22 and row["val_loss_best_epoch"] == 97
    assert row["log_dir"].endswith("seed_2")


def test_a_key_only_earlier_runs_vary_stays_varied_after_a_narrower_sweep(tmp_path):
    # a later `--grid` without `data.num_samples` rewrote sweep.json: the runs that set it
    # must still form their own section, not join those that left it at its default
    folder = fake_sweep(tmp_path, stacked=True)
    state = json.loads((folder / "hidden_dim=8-layout=mt" / "run.json").read_text())
    state["values"]["data.num_samples"] = 256
    (folder / "hidden_dim=8-layout=mt" / "run.json").write_text(json.dumps(state))
    keys, rows = collect(folder)
    assert keys == ["model.hidden_dim", "model.layout", "seed_everything", "data.num_samples"]
    assert {r["data.num_samples"] for r in rows if r["run"] == "hidden_dim=8-layout=mt"} == {256}
    assert "data.num_samples" not in next(r for r in rows if r["run"] == "hidden_dim=8-layout=st")


def test_means_intervals_and_paired_gap_match_hand_computation(tmp_path):
    keys, rows = collect(fake_sweep(tmp_path, stacked=True))
    (comparisons,) = compare(rows, keys, "val", "model.hidden_dim", "model.layout").values()
    narrow, wide = comparisons
    st = [LOSSES[(8, "st", s)] for s in range(3)]
    mt = [LOSSES[(8, "mt", s)] for s in range(3)]
    for estimate, values in ((narrow.value["st"], st), (narrow.value["mt"], mt)):
        assert (estimate.mean, estimate.low, estimate.high) == pytest.approx(hand_estimate(values))
    gaps = [m - s for m, s in zip(mt, st, strict=True)]  # paired by seed
    assert (narrow.gap.mean, narrow.gap.low, narrow.gap.high) == pytest.approx(hand_estimate(gaps))
    # the median of the seeds' best epochs (one of them, never a mean) and their range
    assert narrow.epoch == {"st": EpochRange(96, 95, 97), "mt": EpochRange(96, 95, 97)}
    assert verdict(narrow.gap).startswith("mt is worse than st by 0.1033")
    assert verdict(wide.gap).startswith("no clear difference")
    assert verdict(Estimate(-0.2, -0.3, -0.1, 3)).startswith("mt is better than st by 0.2000")
    assert "one seed" in verdict(Estimate.of([0.05]))


def test_intervals_need_three_seeds_and_a_loss_interval_stays_above_zero():
    assert Estimate.of([0.04, 0.05]).low is None  # two seeds: no interval
    assert "2 seeds: no confidence interval" in verdict(Estimate.of([0.04, 0.05]))
    spread = Estimate.of([0.001, 0.002, 0.09], nonnegative=True)
    assert spread.low == 0.0 and spread.high == pytest.approx(
        hand_estimate([0.001, 0.002, 0.09])[2]
    )
    gap = Estimate.of([0.001, 0.002, -0.09])  # a difference may be negative
    assert gap.low == pytest.approx(hand_estimate([0.001, 0.002, -0.09])[1]) and gap.low < 0
    assert EpochRange.of([2998, 2999, 3000, 3000]).median == 2999  # an epoch a seed had


def test_report_writes_csv_markdown_and_plots(tmp_path):
    folder = fake_sweep(tmp_path, stacked=False)
    for run in folder.iterdir():  # unstacked: one summary per run folder, seed 0 only
        if run.is_dir():
            width, layout = int(run.name.split("-")[0].split("=")[1]), run.name.split("=")[-1]
            (run / "summary.json").write_text(json.dumps(fake_summary(width, layout, 0)))
    written = report(folder)
    assert {p.name for p in written} >= {
        "results.csv",
        "results.md",
        "loss_vs_width.png",
        "gap_vs_width.png",
        "loss_vs_parameters.png",
    }
    table = (folder / "results.md").read_text()
    # per width: the floor, then per layout the compared loss, bit error, exact-match error, epoch
    assert ("| 8 | 1 | >=0.0100 / 0.0500 | 0.1000 | 0.0500 | 0.3000 | 95 | 0.2100 | 0.1050 | "
            "0.6300 | 95 | +0.1100 |") in table  # fmt: skip
    assert "mt floor (bit / exact-match error) | st val loss | st bit error |" in table
    assert "hidden_dim 8: mt - st = +0.1100 (one seed" in table
    with open(folder / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and rows[0]["status"] == "completed"
    assert {"model.hidden_dim", "val_loss_best", "parameters_total", "wall_time_s",
            "val_bit_error_best", "val_exact_match_error_at_best", "floor_bit_error",
            "floor_exact_match_error_kind"} <= set(rows[0])  # fmt: skip
    mt = next(row for row in rows if row["model.layout"] == "mt")
    assert float(mt["floor_bit_error"]) == 0.01 and mt["floor_bit_error_kind"] == "lower bound"


def test_the_errors_can_be_compared_and_their_plot_shows_the_floor(tmp_path):
    folder = fake_sweep(tmp_path, stacked=True)
    written = {p.name for p in report(folder, metric="bit_error")}
    assert {"bit_error_vs_width.png", "errors_vs_width.png", "gap_vs_width.png"} <= written
    text = (folder / "results.md").read_text()
    assert "Compared: bit error" in text and "| st bit error | st val loss |" in text
    mt = [LOSSES[(8, "mt", s)] / 2 for s in range(3)]
    st = [LOSSES[(8, "st", s)] / 2 for s in range(3)]
    gap = [m - t for m, t in zip(mt, st, strict=True)]
    assert f"+{sum(gap) / 3:.4f} [" in text


# a method on mt at width 8: best loss per seed, and its mean conflict telemetry
METHOD_LOSSES = {0: 0.155, 1: 0.18, 2: 0.11}


def fake_method_sweep(folder: Path) -> Path:
    """The fake sweep, plus mt with an aggregator at width 8 (grids as a list)."""
    fake_sweep(folder, stacked=True)
    upgrad = {"class_path": "torchjd.aggregation.UPGrad"}
    name = "hidden_dim=8-layout=mt-aggregator=UPGrad"
    run_folder = folder / name
    run_folder.mkdir()
    values = {"model.hidden_dim": 8, "model.aggregator": upgrad}  # the layout is the base's
    (run_folder / "run.json").write_text(json.dumps(
        {"name": name, "values": values, "seeds": [0, 1, 2], "status": "completed"}
    ))  # fmt: skip
    for seed, loss in METHOD_LOSSES.items():
        summary = {**fake_summary(8, "mt", seed), "val": {"loss_best": loss, "loss_best_epoch": 99}}
        summary["hparams"] = {"model": {"layout": "mt"}}
        summary["multitask"] = {"conflict_mean": {"conflict/fraction": 0.2 * seed,
                                                  "conflict/mean_cosine": -0.1}}  # fmt: skip
        (run_folder / f"seed_{seed}").mkdir()
        (run_folder / f"seed_{seed}" / "summary.json").write_text(json.dumps(summary))
    paths = [f"seed_{seed}/summary.json" for seed in METHOD_LOSSES]
    (run_folder / "summary.json").write_text(json.dumps({"status": "completed", "replicas": paths}))
    sweep = json.loads((folder / "sweep.json").read_text())
    sweep["grid"] = [
        sweep["grid"],
        {
            "model.hidden_dim": [8],
            "model.layout": ["mt"],
            "model.aggregator": [upgrad],
            "seed_everything": [0, 1, 2],
        },
    ]
    sweep["runs"].append(name)
    (folder / "sweep.json").write_text(json.dumps(sweep))
    return folder


def test_methods_are_compared_with_st_and_mt_by_seed(tmp_path):
    from mtfilter.report import compare_methods

    keys, rows = collect(fake_method_sweep(tmp_path))
    assert keys == ["model.hidden_dim", "model.layout", "seed_everything", "model.aggregator"]
    results = {(r.width, r.method): r for r in compare_methods(rows, keys, "val",
               "model.hidden_dim", "model.layout")}  # fmt: skip
    assert set(results) == {(8, "st"), (8, "mt"), (8, "aggregator=UPGrad"), (64, "st"), (64, "mt")}
    upgrad = results[(8, "aggregator=UPGrad")]
    st = {s: LOSSES[(8, "st", s)] for s in range(3)}
    mt = {s: LOSSES[(8, "mt", s)] for s in range(3)}
    closed = [(mt[s] - METHOD_LOSSES[s]) / (mt[s] - st[s]) for s in range(3)]  # 0.5, 1/3, 1
    mean, low, high = hand_estimate(closed)
    assert upgrad.gap_closed.mean == pytest.approx(mean)
    assert (upgrad.gap_closed.low, upgrad.gap_closed.high) == pytest.approx((low, high))
    assert upgrad.gap_to_st.mean == pytest.approx(sum(METHOD_LOSSES[s] - st[s] for s in st) / 3)
    assert upgrad.conflict_fraction == pytest.approx(0.2)  # (0 + 0.2 + 0.4) / 3
    assert results[(8, "mt")].gap_closed.mean == pytest.approx(0.0)
    assert results[(8, "st")].gap_closed is None


def test_the_report_of_a_methods_sweep_has_their_table_and_figures(tmp_path):
    written = {p.name for p in report(fake_method_sweep(tmp_path))}
    assert {"methods_vs_width.png", "conflict_vs_width.png"} <= written
    text = (tmp_path / "results.md").read_text()
    assert "## st and mt" in text and "## Methods against the mt - st gap" in text
    assert "| 8 | aggregator=UPGrad | 3 | 0.1483 [" in text


def test_figures_that_are_not_optima_are_marked(tmp_path):
    folder = fake_sweep(tmp_path, stacked=True)
    for seed in range(3):  # mt at width 8: no convergence check ran, best epoch = last
        path = folder / "hidden_dim=8-layout=mt" / f"seed_{seed}" / "summary.json"
        summary = json.loads(path.read_text())
        summary["convergence"] = None
        summary["val"]["loss_best_epoch"] = 100 if seed else 50
        path.write_text(json.dumps(summary))
    report(folder)  # by default, figures are optima only: the two late seeds are left out
    text = (folder / "results.md").read_text()
    assert "| 0.2100 †2 |" in text  # seed 0's alone
    assert "hidden_dim 8: mt - st = +0.1100 (one seed" in text
    assert "(over converged seeds only; † not converged, left out: mt)" in text
    line_64 = next(line for line in text.splitlines() if line.startswith("- hidden_dim 64"))
    assert "†" not in line_64 and "hidden_dim 64: no clear difference" in text
    report(folder, unconverged="mark")  # a fixed-budget study: kept and marked
    text = (folder / "results.md").read_text()
    assert "| 0.2133 [0.1990, 0.2277] †2/3 |" in text  # two seeds late, one early
    assert "hidden_dim 8: mt is worse" in text and "(† not converged: mt;" in text


def fake_lr_sweep(folder: Path) -> Path:
    """st and mt at width 8 with two learning rates and seeds 0-4: lr 0.1 is better on seeds 0-1
    (the selection seeds), lr 0.01 on the others."""
    grid = {
        "model.hidden_dim": [8],
        "model.layout": ["st", "mt"],
        "model.optimizer.init_args.lr": [0.01, 0.1],
        "seed_everything": list(range(5)),
    }
    runs = []
    for layout in ("st", "mt"):
        for lr in (0.01, 0.1):
            name = f"layout={layout}-lr={lr}"
            (folder / name).mkdir(parents=True)
            values = {"model.hidden_dim": 8, "model.layout": layout,
                      "model.optimizer.init_args.lr": lr}  # fmt: skip
            (folder / name / "run.json").write_text(json.dumps(
                {"name": name, "values": values, "seeds": list(range(5)), "status": "completed"}
            ))  # fmt: skip
            paths = []
            for seed in range(5):
                loss = LR_LOSS[(layout, lr, seed < 2)] + 0.001 * seed
                summary = {**fake_summary(8, layout, 0), "seed": seed}
                summary["val"] = {**summary["val"], "loss_best": loss}
                (folder / name / f"seed_{seed}").mkdir()
                (folder / name / f"seed_{seed}" / "summary.json").write_text(json.dumps(summary))
                paths.append(f"seed_{seed}/summary.json")
            (folder / name / "summary.json").write_text(
                json.dumps({"status": "completed", "replicas": paths})
            )
            runs.append(name)
    report_settings = {"select_key": "model.optimizer.init_args.lr", "selection_seeds": [0, 1]}
    (folder / "sweep.json").write_text(
        json.dumps({"grid": grid, "runs": runs, "report": report_settings})
    )
    return folder


# (layout, lr, is a selection seed) -> best loss
LR_LOSS = {("st", 0.01, True): 0.05, ("st", 0.1, True): 0.01, ("st", 0.01, False): 0.04,
           ("st", 0.1, False): 0.02, ("mt", 0.01, True): 0.30, ("mt", 0.1, True): 0.20,
           ("mt", 0.01, False): 0.25, ("mt", 0.1, False): 0.22}  # fmt: skip


def test_a_setting_is_chosen_on_some_seeds_and_reported_on_the_others(tmp_path):
    folder = fake_lr_sweep(tmp_path)
    report(folder)  # the selection settings come from the sweep's own sweep.json
    text = (folder / "results.md").read_text()
    assert "## `model.optimizer.init_args.lr` chosen per point" in text
    assert "| 8 | st | 2 | 0.01: 0.0505, 0.1: 0.0105 | lr=0.1 ‡high |" in text  # at an edge
    assert "chosen on the selection seeds and reported below on the other seeds" in text
    # reported: lr 0.1 on seeds 2-4 only
    st = [LR_LOSS[("st", 0.1, False)] + 0.001 * seed for seed in (2, 3, 4)]
    mt = [LR_LOSS[("mt", 0.1, False)] + 0.001 * seed for seed in (2, 3, 4)]
    st_mean, mt_mean = sum(st) / 3, sum(mt) / 3
    assert f"| 8 | 3 | >=0.0100 / 0.0500 | {st_mean:.4f} [" in text
    assert f"| {mt_mean:.4f} [" in text


def test_sections_are_named_by_the_settings_they_change(tmp_path):
    from mtfilter.report._stats import Report

    keys = [
        "model.hidden_dim",
        "model.layout",
        "model.loss_reduction",
        "model.accumulate_gradients",
    ]
    base = Report(tmp_path, keys, [], "val", "model.hidden_dim", "model.layout", {})
    assert base.section_name((None, None)) == ""
    assert base.section_name(("sum", None)) == "loss_reduction=sum"
    assert base.section_name((None, False)) == "accumulate_gradients=False"  # False is a setting


def test_one_value_per_point_set_by_the_sweep_is_named_not_chosen(tmp_path):
    """As the converged study's step 2: each point at the rate an earlier sweep chose."""
    import shutil

    folder = fake_lr_sweep(tmp_path)
    for name in ("layout=st-lr=0.01", "layout=mt-lr=0.1"):
        shutil.rmtree(folder / name)
    sweep = json.loads((folder / "sweep.json").read_text())
    sweep["runs"] = ["layout=st-lr=0.1", "layout=mt-lr=0.01"]
    sweep["report"] = {"select_key": "model.optimizer.init_args.lr"}  # no selection seeds
    (folder / "sweep.json").write_text(json.dumps(sweep))
    report(folder)
    text = (folder / "results.md").read_text()
    assert "## `model.optimizer.init_args.lr` per point" in text
    assert "nothing is chosen here" in text and "chosen on the" not in text
    assert "| 8 | st | 5 | 0.1: " in text and "| 8 | mt | 5 | 0.01: " in text


def test_widths_can_be_put_on_one_axis_per_number_of_bits(tmp_path):
    from mtfilter.report._plots import _width_scale

    folder = fake_sweep(tmp_path, stacked=True)
    sweep = json.loads((folder / "sweep.json").read_text())
    sweep["grid"] = {**sweep["grid"], "data.num_bits": [10]}  # one section per num_bits
    for path in folder.glob("*/run.json"):
        state = json.loads(path.read_text())
        state["values"]["data.num_bits"] = 10
        path.write_text(json.dumps(state))
    (folder / "sweep.json").write_text(json.dumps(sweep))
    written = {p.name for p in report(folder, metric="bit_error", width_per="data.num_bits")}
    assert "gap_vs_width.png" in written
    from mtfilter.report import _settings  # the report's own reading of the folder
    from mtfilter.report._collect import collect
    from mtfilter.report._stats import Report, compare

    keys, rows = collect(folder)
    sections = compare(rows, keys, "bit_error", "model.hidden_dim", "model.layout")
    table = Report(
        folder,
        keys,
        rows,
        "bit_error",
        "model.hidden_dim",
        "model.layout",
        sections,
        width_per=_settings(folder, width_per="data.num_bits").width_per,
    )
    names = {table.section_name(s): c for s, c in sections.items()}
    assert _width_scale(table, names) == {"num_bits=10": 10.0}


def test_two_settings_of_a_key_are_compared_point_by_point_paired_by_seed():
    from mtfilter.report._contrast import contrast

    rows = []
    for loss, shift in (("l1", 0.0), ("bce", -0.05)):
        for seed in range(3):
            rows.append({"status": "completed", "model.hidden_dim": 8, "model.layout": "mt",
                         "model.loss": loss, "seed_everything": seed, "converged": True,
                         "val_bit_error_best": 0.1 + shift + 0.01 * seed})  # fmt: skip
    keys = ["model.hidden_dim", "model.layout", "model.loss", "seed_everything"]
    (result,) = contrast(rows, keys, "bit_error", "model.loss", "model.hidden_dim", "model.layout")
    assert list(result.values) == ["bce", "l1"]  # sorted
    assert result.values["l1"].mean == pytest.approx(0.11)
    difference = result.differences["l1"]  # l1 - bce
    assert difference.mean == pytest.approx(0.05)
    assert difference.low == pytest.approx(difference.high)  # the same shift on every seed


def test_a_key_set_for_some_points_only_sorts_beside_the_others():
    """optimum.yaml's UPGrad points set model.aggregator; the others leave it None."""
    from mtfilter.report._contrast import contrast

    rows = [{"status": "completed", "model.hidden_dim": 8, "model.layout": "mt",
             "model.loss": loss, "model.aggregator": aggregator, "seed_everything": 0,
             "converged": True, "val_bit_error_best": 0.1}
            for loss in ("l1", "bce") for aggregator in (None, "UPGrad")]  # fmt: skip
    keys = ["model.hidden_dim", "model.layout", "model.loss", "model.aggregator"]
    results = contrast(rows, keys, "bit_error", "model.loss", "model.hidden_dim", "model.layout")
    assert [r.section_name for r in results] == ["", "aggregator=UPGrad"]


def test_the_transition_is_where_mt_stays_within_noise_of_st():
    from mtfilter.report._stats import WidthComparison, transition

    def width(w, gaps):
        return WidthComparison(w, {}, {}, {}, Estimate.of(gaps), gaps_by_seed=dict(enumerate(gaps)))

    found = transition([width(4, [0.1, 0.12, 0.11]), width(8, [0.0, 0.01, -0.01]),
                        width(16, [0.0, 0.0, 0.0])])  # fmt: skip
    assert found.width == 8
    assert found.per_seed == {0: 8, 1: 16, 2: 8}
    assert transition([width(4, [0.1, 0.12, 0.11])]).width is None
    from mtfilter.report._markdown import _transition_text

    assert _transition_text(found, "hidden_dim").endswith("median 8, range 8-16")
    some = transition([width(4, [0.1, 0.1, 0.1]), width(8, [0.0, 0.1, 0.1])])
    assert _transition_text(some, "hidden_dim").endswith(
        "per seed: seed 0 from 8, seed 1 never, seed 2 never"
    )
    none = transition([width(4, [0.1, 0.1, 0.1])])
    assert "no seed's mt reaches its st" in _transition_text(none, "hidden_dim")


def test_a_pick_that_only_the_tie_break_put_at_an_edge_is_not_an_edge():
    from mtfilter.report._markdown import _choices_section
    from mtfilter.report._metric import METRICS
    from mtfilter.report._select import select

    rows = []
    for lr, bits, loss in ((0.01, 0.2, 0.5), (0.03, 0.0, 0.2), (0.1, 0.0, 0.1)):
        for seed in (0, 1):
            rows.append({"status": "completed", "model.hidden_dim": 8, "model.layout": "st",
                         "model.optimizer.init_args.lr": lr, "seed_everything": seed,
                         "converged": True, "val_bit_error_best": bits,
                         "val_loss_best": loss})  # fmt: skip
    keys = ["model.hidden_dim", "model.layout", "model.optimizer.init_args.lr", "seed_everything"]
    lr = "model.optimizer.init_args.lr"
    _, (tied,) = select(rows, keys, "bit_error", lr, "model.hidden_dim", "model.layout", None)
    assert tied.chosen == {lr: 0.1} and tied.edges == {}  # 0.03 ties on bit error: inside
    assert tied.tied_at_edge
    strictly = [{**r, "val_bit_error_best": 0.1} if r[lr] == 0.03 else r for r in rows]
    _, (edge,) = select(strictly, keys, "bit_error", lr, "model.hidden_dim", "model.layout", None)
    assert edge.chosen == {lr: 0.1} and edge.edges == {lr: "high"} and not edge.tied_at_edge
    # results.md's legend counts both, and says why the tie is not marked
    legend = " ".join(_choices_section([tied, edge], [lr], "hidden_dim", METRICS["bit_error"]))
    assert "(1 of 2 points; 1 more chose the lowest or highest value tried in a tie" in legend


def test_methods_are_compared_within_each_setting_of_a_contrasted_key():
    from mtfilter.report._methods import compare_methods

    rows = []
    for loss, base in (("l1", 0.3), ("bce", 0.1)):
        for method, extra, layout in (("st", 0.0, "st"), ("mt", 0.2, "mt"),
                                      ("UPGrad", 0.1, "mt")):  # fmt: skip
            for seed in range(3):
                rows.append({"status": "completed", "model.hidden_dim": 8,
                             "model.layout": layout, "model.loss": loss, "seed_everything": seed,
                             "model.aggregator": "UPGrad" if method == "UPGrad" else None,
                             "converged": True, "val_bit_error_best": base + extra})  # fmt: skip
    keys = ["model.hidden_dim", "model.layout", "model.loss", "model.aggregator",
            "seed_everything"]  # fmt: skip
    results = compare_methods(rows, keys, "bit_error", "model.hidden_dim", "model.layout",
                              within="model.loss")  # fmt: skip
    named = {r.method: r for r in results}
    assert set(named) == {f"{m} (loss={loss})" for m in ("st", "mt", "aggregator=UPGrad")
                          for loss in ("l1", "bce")}  # fmt: skip
    # each loss's method against its own st and mt: half the gap closed under both
    for loss in ("l1", "bce"):
        assert named[f"aggregator=UPGrad (loss={loss})"].gap_closed.mean == pytest.approx(0.5)


def test_time_section_counts_a_stacked_run_once_per_point_and_phase():
    from mtfilter.report._time import time_section

    def row(run, width, seed, seconds):
        return {"run": run, "model.hidden_dim": width, "seed_everything": seed,
                "wall_time_s": seconds}  # fmt: skip

    rows = [
        row("selection/w8", 8, 0, 120.0), row("selection/w8", 8, 1, 120.0),  # one stacked run
        row("confirmation/w8", 8, 2, 60.0),
        row("selection/w64", 64, 0, 600.0), row("confirmation/w64", 64, 2, 420.0),
    ]  # fmt: skip
    lines = time_section(rows, ["model.hidden_dim", "seed_everything"])
    assert "20.0 min in all" in lines[2]
    assert lines[4] == "| hidden_dim | confirmation (min) | selection (min) | all (min) | share |"
    assert lines[6:8] == ["| 64 | 7.0 | 10.0 | 17.0 | 85% |", "| 8 | 1.0 | 2.0 | 3.0 | 15% |"]
    assert time_section([row("w8", 8, 0, None)], ["model.hidden_dim"]) == []


def test_runs_of_another_sweep_join_the_report_as_their_own_series(tmp_path):
    here = fake_sweep(tmp_path / "capacity", stacked=True)  # varies num_bits (6 here)
    sweep = json.loads((here / "sweep.json").read_text())
    sweep["grid"] = {"data.num_bits": [6], **sweep["grid"]}
    (here / "sweep.json").write_text(json.dumps(sweep))
    for run_file in here.glob("*/run.json"):
        run = json.loads(run_file.read_text())
        run["values"] = {"data.num_bits": 6, **run["values"]}
        run_file.write_text(json.dumps(run))
    other = fake_sweep(tmp_path / "optimum", stacked=True)  # num_bits 10, not varied there
    for path in other.glob("*/seed_*/summary.json"):
        summary = json.loads(path.read_text())
        summary["hparams"] = {"data": {"num_bits": 10}, "model": {"loss": "bce"}}
        path.write_text(json.dumps(summary))
    report(here, include=[{"folder": str(other), "where": {"model.loss": "bce"}}])
    with open(here / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted({r["data.num_bits"] for r in rows}) == ["10", "6"] and len(rows) == 24
    table = (here / "results.md").read_text()
    assert "## st and mt, num_bits=6" in table and "## st and mt, num_bits=10" in table
    report(here, include=[{"folder": str(other), "where": {"model.loss": "l1"}}])  # none match
    with open(here / "results.csv") as f:
        assert len(list(csv.DictReader(f))) == 12
    with pytest.raises(ConfigError, match="include entries"):
        report(here, include=[{"path": str(other)}])


def test_an_included_study_that_has_not_run_yet_is_left_out_and_named(tmp_path, capsys):
    here = fake_sweep(tmp_path / "capacity", stacked=True)
    report(here, include=[{"folder": str(tmp_path / "optimum"), "where": {"model.loss": "bce"}}])
    with open(here / "results.csv") as f:
        assert len(list(csv.DictReader(f))) == 12  # this sweep's own runs only
    assert f"`{tmp_path / 'optimum'}`. Their runs join" in (here / "results.md").read_text()
    assert "has no sweep yet" in capsys.readouterr().err


def test_a_sweeps_report_settings_are_checked_by_name():
    import inspect

    from mtfilter.report import REPORT_OPTIONS, check_report_settings

    assert set(REPORT_OPTIONS) == set(inspect.signature(report).parameters) - {"folder"}
    with pytest.raises(ConfigError, match="'contrast_kye' is not a report option"):
        check_report_settings({"metric": "bit_error", "contrast_kye": "model.loss"})


def test_keys_every_run_sets_are_conditions_not_methods():
    from mtfilter.report import compare_methods

    rows = [
        {"model.hidden_dim": 4, "model.layout": layout, "data.num_bits": bits, "seed_everything": 0,
         "status": "completed", "converged": True, "val_loss_best": 0.1}
        for layout in ("st", "mt") for bits in (6, 8)
    ]  # fmt: skip
    keys = ["data.num_bits", "model.hidden_dim", "model.layout", "seed_everything"]
    assert compare_methods(rows, keys, "val", "model.hidden_dim", "model.layout") == []
    plain = [{**rows[0], "data.num_bits": None}, {**rows[2], "data.num_bits": None}]
    found = compare_methods([*rows, *plain], keys, "val", "model.hidden_dim", "model.layout")
    assert {r.method for r in found} >= {"st", "mt", "num_bits=6"}


def test_a_sweep_of_one_layout_reports_that_layout_alone(tmp_path):
    folder = fake_sweep(tmp_path, stacked=True)
    for run in list(folder.iterdir()):  # keep the mt runs: a grid without a layout axis
        if run.is_dir() and run.name.endswith("st"):
            shutil.rmtree(run)
    sweep = json.loads((folder / "sweep.json").read_text())
    sweep["runs"] = [name for name in sweep["runs"] if name.endswith("mt")]
    (folder / "sweep.json").write_text(json.dumps(sweep))
    report(folder)
    table = (folder / "results.md").read_text()
    assert "| hidden_dim | seeds | mt floor (bit / exact-match error) | mt val loss |" in table
    assert "| st val loss" not in table and "mt - st" not in table and "None" not in table


def test_a_baseline_under_two_settings_draws_two_distinguishable_lines():
    # the optimum study's conflict plot once drew mt under bce and under L1 as one orange line
    styles = _method_styles(["st (loss=bce)", "mt (loss=bce)", "mt (loss=l1)", "aggregator=UPGrad"])
    bce, l1 = styles["mt (loss=bce)"], styles["mt (loss=l1)"]
    assert bce["color"] == l1["color"]  # mt's colour, both
    assert (bce["marker"], bce["linestyle"]) != (l1["marker"], l1["linestyle"])
    assert styles["aggregator=UPGrad"]["color"] != bce["color"]


def test_a_report_waits_for_one_being_written_in_the_same_folder(tmp_path):
    """Two sweeps over one folder that end together write their reports one after the other:
    a second report process waits while the first holds the folder's report lock."""
    import subprocess
    import sys
    import time

    from mtfilter.folders import REPORT_LOCK, exclusive

    folder = fake_sweep(tmp_path, stacked=True)
    with exclusive(folder / REPORT_LOCK):
        second = subprocess.Popen([sys.executable, "-m", "mtfilter.cli", "report", str(folder)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
        time.sleep(3)  # ample for it to start and reach the lock (a report here takes ~2 s)
        assert second.poll() is None and not (folder / "results.md").exists()
    assert second.wait(timeout=120) == 0, second.stderr.read()
    assert (folder / "results.md").is_file()


def test_a_report_file_is_replaced_whole_or_not_at_all(tmp_path):
    from mtfilter.folders import replacing

    path = tmp_path / "results.md"
    path.write_text("the earlier report")
    with pytest.raises(RuntimeError), replacing(path) as temporary:
        temporary.write_text("half of a")
        raise RuntimeError("the writer died")
    assert path.read_text() == "the earlier report" and sorted(tmp_path.iterdir()) == [path]
    with replacing(path) as temporary:
        temporary.write_text("the new report")
    assert path.read_text() == "the new report" and sorted(tmp_path.iterdir()) == [path]


def _rewrite_csv(path: Path, change) -> None:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        names, rows = reader.fieldnames, list(reader)
    for row in rows:
        change(row)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=names)
        writer.writeheader()
        writer.writerows(rows)


def test_a_sweep_against_its_own_results_moves_nothing(tmp_path):
    folder = fake_sweep(tmp_path / "sweep", stacked=True)
    report(folder)
    shutil.copy(folder / "results.csv", tmp_path / "old.csv")
    report(folder, against=tmp_path / "old.csv")
    text = (folder / "against.md").read_text()
    assert (
        "**mt - st readings: 2 of 2 the same; transitions: 1 of 1 the same; "
        "runs: 12 of 12 the same**"
    ) in text
    assert "## Runs in both" not in text  # only runs that moved are listed
    assert "moved" not in text.split("**")[-1]  # the legend names the word; no row has it


def test_a_gap_that_changed_side_and_the_transition_it_moved_are_named(tmp_path):
    folder = fake_sweep(tmp_path / "sweep", stacked=True)
    report(folder)
    old = tmp_path / "old.csv"
    shutil.copy(folder / "results.csv", old)

    def mt_worse_at_64(row):  # old: mt clearly behind st at 64 too, so no transition
        if row["model.hidden_dim"] == "64" and row["model.layout"] == "mt":
            row["val_loss_best"] = str(0.5 + 0.01 * int(row["seed_everything"]))

    _rewrite_csv(old, mt_worse_at_64)
    report(folder, against=old)
    text = (folder / "against.md").read_text()
    assert "mt - st readings: 1 of 2 the same; transitions: 0 of 1 the same" in text
    assert "| - | 64 | mt | 0.5100 | 0.0523 |  |  |  |" in text  # each layout's mean
    assert "| - | 64 | mt - st |  |  | +0.4600 >0 | +0.0023 ~0 | moved |" in text
    assert "| - | none | 64 | moved |" in text  # old: no transition; new: at 64
    assert "runs: 9 of 12 the same" in text  # mt 64's three seeds, run by run, largest first
    runs = text.split("## Runs in both", 1)[1].splitlines()[4:]
    assert [row.split(" | ")[1:5] for row in runs if row] == [
        ["2", "-", "0.5200", "0.0520"], ["1", "-", "0.5100", "0.0500"],
        ["0", "-", "0.5000", "0.0550"],
    ]  # fmt: skip


def test_picks_against_results_with_another_pick_are_named(tmp_path):
    folder = fake_lr_sweep(tmp_path / "sweep")
    report(folder)
    old = tmp_path / "old.csv"
    shutil.copy(folder / "results.csv", old)

    def st_better_at_001(row):  # old: st's selection seeds best at lr 0.01
        if row["model.layout"] == "st" and row["model.optimizer.init_args.lr"] == "0.01":
            row["val_loss_best"] = "0.001"

    _rewrite_csv(old, st_better_at_001)
    report(folder, against=old)
    text = (folder / "against.md").read_text()
    assert "| st 8 | lr=0.01 | lr=0.1 | moved |" in text
    assert "| mt 8 | lr=0.1 | lr=0.1 |  |" in text
    assert "picks: 1 of 2 the same" in text


def test_against_a_file_that_is_not_results_is_refused_before_anything_is_written(tmp_path):
    folder = fake_sweep(tmp_path / "sweep", stacked=True)
    (tmp_path / "notes.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ConfigError, match=r"notes.csv is not an mtfilter results.csv"):
        report(folder, against=tmp_path / "notes.csv")
    with pytest.raises(ConfigError, match=r"cannot read .*missing.csv"):
        report(folder, against=tmp_path / "missing.csv")
    assert not (folder / "results.md").exists() and not (folder / "against.md").exists()


def test_a_study_reported_on_the_test_split_picks_on_validation(tmp_path):
    """The pick a sweep acts on minimises `select.metric` (validation), not the figure its
    report compares: here the rate better on the test split is worse on validation."""
    from mtfilter.report import pick
    from mtfilter.sweep._definition import report_settings
    from mtfilter.sweep._protocol import Selection

    lr_key = "model.optimizer.init_args.lr"
    select = Selection(candidates={lr_key: [0.01, 0.03]}, selection_seeds=[0, 1], seeds=[],
                       metric="bit_error")  # fmt: skip
    settings = report_settings({"metric": "test_bit_error"}, select)
    assert settings["metric"] == "test_bit_error" and settings["select_metric"] == "bit_error"
    runs = []
    for rate, val_error, test_error in [(0.01, 0.10, 0.30), (0.03, 0.20, 0.05)]:
        name = f"hidden_dim=8-layout=mt-lr={rate}"
        values = {"model.hidden_dim": 8, "model.layout": "mt", lr_key: rate}
        (tmp_path / name).mkdir()
        (tmp_path / name / "run.json").write_text(json.dumps(
            {"name": name, "values": values, "seeds": [0, 1], "status": "completed"}))  # fmt: skip
        paths = []
        for seed in (0, 1):
            summary = fake_summary(8, "mt", seed)
            summary["val"]["bit_error_best"] = val_error
            summary["splits"] = {"test": {"bit_error": test_error}}
            (tmp_path / name / f"seed_{seed}").mkdir()
            (tmp_path / name / f"seed_{seed}" / "summary.json").write_text(json.dumps(summary))
            paths.append(f"seed_{seed}/summary.json")
        (tmp_path / name / "summary.json").write_text(
            json.dumps({"status": "completed", "seeds": [0, 1], "replicas": paths})
        )
        runs.append(name)
    grid = {"model.hidden_dim": [8], "model.layout": ["mt"], lr_key: [0.01, 0.03],
            "seed_everything": [0, 1]}  # fmt: skip
    (tmp_path / "sweep.json").write_text(json.dumps({"grid": grid, "runs": runs,
                                                     "report": settings}))  # fmt: skip
    (choice,) = pick(tmp_path)
    assert choice.chosen == {lr_key: 0.01}  # validation's pick; the test split: 0.03
