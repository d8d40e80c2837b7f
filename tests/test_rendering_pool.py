"""The worker's rendering pool: its processes end with the worker, however the worker ends."""

from __future__ import annotations

import signal
import subprocess
import sys

import psutil

# a worker stand-in: starts the pool, has a render process take work, prints that process's pid, then waits
WORKER = """
import os, sys, time
from activities.notices.rendering_pool import rendering_pool
renderer = rendering_pool(1)
print(renderer.submit(os.getpid).result(), flush=True)
time.sleep(600)
"""


def test_a_render_process_ends_when_its_worker_is_killed():
    worker = subprocess.Popen([sys.executable, "-c", WORKER], stdout=subprocess.PIPE, text=True)
    try:
        render_pid = int(worker.stdout.readline())
        render_process = psutil.Process(render_pid)
        assert render_process.is_running() and render_process.nice() > psutil.Process().nice()
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
        render_process.wait(timeout=10)  # psutil.TimeoutExpired if the render process outlived its worker
    finally:
        worker.kill()
    assert not psutil.pid_exists(render_pid) or psutil.Process(render_pid).status() == psutil.STATUS_ZOMBIE
