"""Fault tests: real processes killed, stopped and restarted while invoices are in flight.

Each test starts its own stack (``stack``), plays scripted fates on its invoices (``fates``),
causes its fault, and checks that nothing was lost and nothing duplicated (``checks``), printing
one line. ``DUNNING_SOAK=1`` runs more invoices and more faults:

    DUNNING_SOAK=1 .venv/bin/python -m pytest -q tests/faults -s

``DUNNING_SOAK_STATUS=live`` makes the driver read statuses by the workflow's ``status`` query instead of
the read model (``projection``, the default, as the API and the CLI do).
"""
