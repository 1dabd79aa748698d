"""What a run records: the figures and the code that computes each (`metrics`, `evaluation`), the
epoch log kept on the device (`epoch_log`), the conflict telemetry (`conflicts`), their
publishing to the loggers (`publishing`, `tensorboard`) and the run's summary (`summaries`)."""
