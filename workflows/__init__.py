"""Deterministic workflow code: models, the dunning policy and the invoice state machine."""
