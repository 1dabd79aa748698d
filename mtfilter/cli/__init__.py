"""The `mtfilter` command: dispatch and exit codes (`main`), `fit`/`validate`/`test`/`predict`
through LightningCLI (`fit`), `sweep` and `report` (`sweep_report`), and configuration errors as
one line (`parse_errors`). `python -m mtfilter.cli` is the `mtfilter` command."""
