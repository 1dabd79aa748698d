"""TrainingConfig: the training settings checked once, frozen after."""

import dataclasses

import pytest
from torchjd.aggregation import UPGrad
from torchjd.scalarization import UW

from mtfilter.errors import ConfigError
from mtfilter.train.config import TrainingConfig


def test_a_config_cannot_change_after_it_is_built():
    config = TrainingConfig(num_bits=4, learning_rates=(0.01, 0.03))
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.loss = "bce"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"loss": "hinge"}, "model.loss"),
        ({"loss_dropout": 1.0}, "model.loss_dropout"),
        ({"loss_reduction": "max"}, "model.loss_reduction"),
        ({"telemetry_interval": -1}, "model.telemetry_interval"),
        ({"accumulate_gradients": True, "aggregator": UPGrad()}, "model.accumulate_gradients"),
        ({"aggregator": object()}, "model.aggregator"),
        ({"scalarizer": UW(shape=3)}, "model.scalarizer"),
        ({"scalarizer": UW(shape=4), "loss_dropout": 0.2}, "model.loss_dropout"),
        ({"learning_rates": ()}, "model.learning_rates"),
        ({"learning_rates": (0.01, 0.01)}, "model.learning_rates"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_each_impossible_setting_is_refused_in_one_line_naming_it(settings, named):
    with pytest.raises(ConfigError) as raised:
        TrainingConfig(num_bits=4, **settings)
    message = str(raised.value)
    assert named in message and "\n" not in message
