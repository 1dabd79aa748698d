"""Fixtures shared by every test (helpers are in tests/helpers)."""

from pathlib import Path

import pytest


@pytest.fixture
def run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh working folder: runs write lightning_logs/ here."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["mtfilter"])  # the CLI gets its args from the tests only
    return tmp_path
