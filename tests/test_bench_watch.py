"""The benchmark's process watch counts the CPU used while it watched, and nothing after."""

from __future__ import annotations

import os
import time

from bench.stack import ProcessWatch


def _burn(seconds: float) -> None:
    """Keep this process on the CPU for about ``seconds``."""
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


async def test_a_finished_watch_reports_what_it_saw_not_what_came_after():
    async with ProcessWatch({"this": os.getpid()}, alone=frozenset({"this"})) as watch:
        _burn(0.3)
    _burn(0.6)

    used = watch.usage()["this"]
    assert 0.25 <= used.cpu_seconds < 0.6, used
    assert used.peak_rss_mb > 0
