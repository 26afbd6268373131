"""The command line: ``flask db …``, ``flask tenants …``, ``flask cluster …``, ``flask github …``, ``flask usage …``
and ``flask billing …``.

Like :mod:`app.api` for HTTP, this package sits on top of :mod:`app.tenancy` and never
imports :mod:`app.api`. Commands parse, call the core, and render: human text on a
terminal, JSON with ``--json``. Exit codes: 0 success, 1 a known domain error (one line
on stderr; also a database not migrated or not answering) or some schemas failed, 2 bad
usage (or another fan-out holds the lock). Anything unexpected keeps its traceback.

One module per command group, each importing only the modules below it:

- ``tenants``      ``flask tenants create|suspend|resume|delete|list|revision``; gathers the rest of the group
- ``keys``         ``flask tenants keys create|list|revoke``
- ``portability``  ``flask tenants export|import``
- ``fanout``       ``flask tenants migrate|status|check``: the fan-out with its progress and summary
- ``cluster``      ``flask cluster …`` and ``flask tenants move`` (Citus)
- ``github``       ``flask github deliveries list|purge|replay``, ``flask tenants purge`` (uninstalled) and
  ``flask tenants github-sync``
- ``billing``      ``flask usage close-period`` and ``flask billing events|backlog``: the billing outbox
- ``db``           ``flask db …``: the public schema
- ``errors``       a known domain error, or the database's, as one line on stderr and exit status 1
- ``render``       the JSON shape of a tenant, shared by the commands that print one
- ``app``          the HTTP-less app a command builds when nobody handed it one
- ``plugin``       the ``flask.commands`` entry point: ``flask tenants`` without building the app first

This file imports nothing: the plugin imports the commands with the garbage collector
paused, and that only works if importing the package does not import them first.
"""
