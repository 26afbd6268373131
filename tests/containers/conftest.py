"""Fixtures for the container tests: ``images`` and ``stack`` (see podman_stack.py)."""

from podman_stack import images, podman_ready, stack  # noqa: F401 - fixtures, found by pytest here
