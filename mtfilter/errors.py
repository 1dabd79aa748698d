"""Errors that name a problem with the user's input or run; the CLI prints them as one line."""


class MtfilterError(Exception):
    """Base of the errors the CLI reports without a traceback."""


class ConfigError(MtfilterError, ValueError):
    """An invalid setting or combination of settings."""


class CheckpointMismatchError(MtfilterError, ValueError):
    """A checkpoint that does not belong to this dataset or model."""


class NonFiniteLossError(MtfilterError, FloatingPointError):
    """A logged loss became NaN or infinite: training stops."""


class RunAborted(MtfilterError):
    """A second Ctrl-C: training stops at once, without finishing its epoch."""


class RunStopped(MtfilterError):
    """A stop signal (a scheduler's SIGTERM, say) that came while the current epoch could not end
    before the scheduler kills the process: training stopped inside the epoch. `last.ckpt`, as
    last written at the end of an earlier epoch, resumes it exactly."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum
