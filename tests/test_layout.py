"""Which way imports flow between the top-level packages (see README, Layout).

Each check imports in a fresh interpreter, so nothing another test loaded can hide an import.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def loaded_packages(*modules: str) -> set[str]:
    """The top-level packages of this repository that importing ``modules`` loads."""
    probe = (
        f"import sys; import {', '.join(modules)}; "
        "print('\\n'.join(sorted({name.split('.')[0] for name in sys.modules})))"
    )
    ran = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    return set(ran.stdout.split()) & {"api", "activities", "bench", "cli", "client", "tests", "worker", "workflows"}


@pytest.mark.parametrize(
    "modules", [("api.app", "api.server", "api.codec_server"), ("client.invoices", "client.temporal"), ("cli.main",)]
)
def test_the_api_the_client_library_and_the_cli_do_not_load_the_worker(modules):
    assert "worker" not in loaded_packages(*modules)


def test_the_client_library_needs_neither_the_api_nor_the_cli():
    assert not {"api", "cli"} & loaded_packages("client", "client.invoices", "client.namespace", "client.temporal")


def test_the_benchmark_does_not_load_the_tests():
    assert "tests" not in loaded_packages("bench.__main__", "bench.baseline_worker")
