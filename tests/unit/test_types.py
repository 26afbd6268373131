"""The types are checked, not only written: mypy over app/ with pyproject.toml's [tool.mypy].

app/tenancy is checked strictly (what ``mypy --strict`` turns on), the rest of app/
normally. .ci/run runs the same check in its lint step, for the output.
"""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_mypy_finds_no_error_in_app():
    pytest.importorskip("mypy", reason="mypy is in the test extra: python3 dev.py installs it")
    # A fresh interpreter, from the repository: mypy reads its configuration and files there.
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-error-summary", "--hide-error-context"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
