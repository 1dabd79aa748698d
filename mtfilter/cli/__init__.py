"""The `mtfilter` command, the top floor: it dispatches only. `main.py` parses the command, maps
errors to one line and exit statuses; `fit`/`validate`/`test`/`predict` run `MtfilterCLI`
(`mtfilter.train.cli`), `sweep` and `report` their functions (`sweep_report.py`).
`python -m mtfilter.cli` is the `mtfilter` command."""
