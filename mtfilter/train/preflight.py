"""A fit's configuration checked without training: the fit's own parsing, links and constructors,
with the model on the `meta` device. A sweep checks every run this way before any starts."""

from typing import Any

import torch
from typing_extensions import override

from mtfilter import parse_errors
from mtfilter.train.cli import MtfilterCLI
from mtfilter.train.module import BitMappingModule


class PreflightCLI(MtfilterCLI):
    """What `mtfilter fit` would build, checked without building it: the fit's own parsing,
    argument links, class construction and checks, with the model's parameters on the `meta`
    device (no memory, any size) and no Trainer. A sweep checks every run this way before any
    starts. Give it the fit's arguments without the `fit` subcommand."""

    def __init__(self, args: list[str], origin: parse_errors.Origin | None = None) -> None:
        super().__init__(args=args, origin=origin, run=False)

    @override
    def _add_instantiators(self) -> None:
        super()._add_instantiators()
        # Before Lightning's own, which only records the hyperparameters around the same call.
        self.parser.add_instantiator(_on_meta, BitMappingModule, subclasses=True, prepend=True)

    @override
    def instantiate_trainer(self, **kwargs: Any) -> Any:
        return None

    @override
    def after_instantiate_classes(self) -> None:
        chunks = self.model.hparams.batch_norm_chunks
        self.datamodule.check_batch_size(1, chunks)

    def resolved(self) -> str:
        """The run's configuration as YAML, as `mtfilter fit --print_config` shows it."""
        return self.parser.dump(self.config, skip_link_targets=True)


def _on_meta(class_type: type, *args: Any, **kwargs: Any) -> Any:
    kwargs.pop("applied_instantiation_links", None)
    with torch.device("meta"):
        return class_type(*args, **kwargs)
