import numpy as np
import pytest
import torch

from mtfilter.record.epoch_log import EpochLog


def test_best_and_epoch_are_exact_over_every_epoch_across_pulls():
    log = EpochLog(["loss", "acc"], num_replicas=2, capacity=4)  # several buffer refills
    rng = np.random.default_rng(0)
    values = rng.random((11, 2, 2))
    for epoch, row in enumerate(values, start=1):
        log.record(epoch, torch.tensor(row, dtype=torch.float32))
        if epoch == 6:
            log.pull()
    log.pull()
    best, epochs = log.best("loss")
    as_float32 = values.astype(np.float32)
    np.testing.assert_allclose(best, as_float32[:, :, 0].min(0))
    np.testing.assert_array_equal(epochs, as_float32[:, :, 0].argmin(0) + 1)
    np.testing.assert_allclose(log.last("acc"), as_float32[-1, :, 1])


def test_nan_epochs_never_count_as_best_and_ties_keep_the_first():
    log = EpochLog(["loss"])
    for epoch, value in enumerate([0.5, 0.2, float("nan"), 0.2, 0.3], start=1):
        log.record(epoch, torch.tensor([[value]]))
    log.pull()
    best, epochs = log.best("loss")
    assert best[0] == np.float32(0.2) and epochs[0] == 2


def test_latest_row_stays_on_the_device_and_unpublished_rows_are_handed_out_once():
    log = EpochLog(["loss"])
    log.record(1, torch.tensor([[0.5]]))
    assert float(log.latest("loss")[0]) == 0.5
    log.pull()
    epochs, values = log.take_unpublished()
    assert epochs.tolist() == [1] and values.shape == (1, 1, 1)
    assert len(log.take_unpublished()[0]) == 0


def test_state_round_trip_republishes_the_history():
    log = EpochLog(["loss"])
    for epoch in range(1, 4):
        log.record(epoch, torch.tensor([[1.0 / epoch]]))
    state = log.state_dict()
    assert all(isinstance(state[k], torch.Tensor) for k in ("epochs", "values"))
    restored = EpochLog(["loss"])
    restored.load_state_dict(state)
    assert restored.num_epochs == 3
    assert restored.take_unpublished()[0].tolist() == [1, 2, 3]


def test_a_history_without_a_newer_figure_loads_with_that_figure_missing():
    """A checkpoint written before a figure existed still resumes: the figure is NaN there."""
    old = EpochLog(["loss"])
    for epoch in range(1, 4):
        old.record(epoch, torch.tensor([[1.0 / epoch]]))
    new = EpochLog(["loss", "batch_loss"])
    new.load_state_dict(old.state_dict(), published=True)
    assert new.num_epochs == 3 and len(new.take_unpublished()[0]) == 0
    assert new.history("loss")[1][:, 0].tolist() == pytest.approx([1.0, 0.5, 1 / 3])
    assert np.isnan(new.history("batch_loss")[1]).all()
    assert np.isnan(new.best("batch_loss")[0]).all()  # no value: the summary says null
    with pytest.raises(ValueError, match="keys this run lacks"):
        EpochLog(["accuracy"]).load_state_dict(old.state_dict())
