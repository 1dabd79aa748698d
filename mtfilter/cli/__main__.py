"""`python -m mtfilter.cli ...`, as the sweep starts its fits: the same as `mtfilter ...`."""

from mtfilter.cli.main import main

main()
