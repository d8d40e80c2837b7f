"""Where notices render: a pool of low-priority processes beside the worker.

Rendering (the invoice PDF above all) is CPU-bound Python. In the worker's own threads it holds
the GIL against the event loop that runs workflow tasks, so a payment waits seconds while a batch
of invoices is issued. In processes of their own, at a lower scheduling priority, renders take
the CPU the workflow tasks, Temporal and Postgres leave: requests stay fast and the backlog of
notices drains behind them. A render process ends with the worker, even one killed by SIGKILL.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor

RENDER_NICENESS = 10  # added to the worker's own: the scheduler serves requests first


def rendering_pool(processes: int) -> ProcessPoolExecutor:
    """``processes`` spawned render processes (spawn: the worker's threads must not be forked)."""
    return ProcessPoolExecutor(
        max_workers=processes, mp_context=multiprocessing.get_context("spawn"), initializer=_start_render_process
    )


def _start_render_process() -> None:
    os.nice(RENDER_NICENESS)
    threading.Thread(target=_exit_with_the_worker, name="exit with the worker", daemon=True).start()


def _exit_with_the_worker() -> None:
    """A pool's process waits for work forever, even once its worker is gone: it ends with it instead."""
    parent = multiprocessing.parent_process()
    assert parent is not None  # a spawned process always has one
    parent.join()
    os._exit(0)
