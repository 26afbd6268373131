#!/usr/bin/env python3
"""Two-command developer entry point; needs nothing but Python 3.11+.

    python3 dev.py serve    # the API on http://127.0.0.1:5000 (embedded PostgreSQL unless DATABASE_URL)
    python3 dev.py test     # the whole test suite (extra arguments go to pytest)

On first use (and whenever a lock file changes) it creates `.venv/` and installs the
pinned, hash-checked dependencies from `requirements-dev.lock`, then the project itself
in editable mode. Only the standard library is used here, on purpose: this file runs
before anything is installed.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
LOCK = ROOT / "requirements-dev.lock"
STAMP = VENV / ".tenantry-lock.sha256"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")


def _lock_digest() -> str:
    digest = hashlib.sha256()
    for path in (LOCK, ROOT / "pyproject.toml"):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def ensure_environment() -> None:
    """Create or refresh `.venv` when the lock or pyproject changed since the last install."""
    if sys.version_info < (3, 11):
        sys.exit(f"Tenantry needs Python 3.11 or newer; this is {sys.version.split()[0]}.")
    wanted = _lock_digest()
    if STAMP.exists() and STAMP.read_text().strip() == wanted:
        return
    if not (BIN / "python").exists():
        print("dev.py: creating .venv", file=sys.stderr)
        venv.EnvBuilder(with_pip=True).create(VENV)
    pip = [str(BIN / "python"), "-m", "pip", "--disable-pip-version-check", "-q"]
    print("dev.py: installing pinned dependencies from requirements-dev.lock", file=sys.stderr)
    subprocess.run([*pip, "install", "--require-hashes", "-r", str(LOCK)], check=True)
    subprocess.run([*pip, "install", "--no-deps", "-e", str(ROOT)], check=True)
    STAMP.write_text(wanted + "\n")


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"serve", "test", "flask"}:
        print(__doc__, file=sys.stderr)
        return 2
    ensure_environment()
    command, rest = argv[0], argv[1:]
    # The app is found by its path, and its development state (embedded PostgreSQL, admin
    # token) stays in the repository's instance/, from whatever directory this is run:
    # the command keeps the caller's working directory, so a relative path given to it
    # (flask tenants export --output, import FILE) means what the caller meant.
    env = dict(os.environ, FLASK_APP=str(ROOT / "wsgi.py"))
    env.setdefault("INSTANCE_PATH", str(ROOT / "instance"))
    if command == "test":
        # pytest finds its configuration and the test tree from the repository; paths
        # given to it are taken from the caller's directory as usual.
        args = [str(BIN / "python"), "-m", "pytest", "--rootdir", str(ROOT), "-c", str(ROOT / "pyproject.toml"),
                *rest]
        if not any(Path(a.split("::")[0]).exists() for a in rest if not a.startswith("-")):
            args.append(str(ROOT / "tests"))  # no test path given: the whole suite
    elif command == "serve":
        host = os.environ.get("HOST", "127.0.0.1")
        port = os.environ.get("PORT", "5000")
        args = [str(BIN / "flask"), "run", "--host", host, "--port", port, *rest]
    else:  # any other flask command: python3 dev.py flask tenants list
        args = [str(BIN / "flask"), *rest]
    # Replace this process, so signals (Ctrl-C, a supervisor's SIGTERM) reach the server
    # itself and it can stop the embedded PostgreSQL on its way out.
    os.execve(args[0], args, env)


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        sys.exit(130)
