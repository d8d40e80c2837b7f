"""Wiring: settings, Temporal client, worker, embedded dev stack and the CLI."""
