"""``python -m bench``: run the measurements, write ``bench/results/bench.{json,md}`` and ``throughput.png``.

Each measurement that needs servers starts its own embedded stack (Postgres, Temporal dev
server, mail sink, the service's worker and the baseline worker) and stops it afterwards.
``--quick`` runs every measurement at smoke-test sizes; any size option overrides it.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from datetime import datetime, timezone
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markdown import Markdown
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

from bench.measure_lifecycle import LifecycleSizes, measure_lifecycle
from bench.measure_projection import ProjectionSizes, measure_projection
from bench.measure_scale import ScaleSizes, measure_scale
from bench.measure_starts import StartSizes, measure_starts
from bench.measure_timeskip import TimeskipSizes, measure_timeskip
from bench.report import Measurement, Report, machine, markdown_table, write_report
from bench.stack import BenchStack
from bench.workload import Say

RESULTS = Path(__file__).resolve().parent / "results"


class Name(StrEnum):
    LIFECYCLE = "lifecycle"
    STARTS = "starts"
    SCALE = "scale"
    PROJECTION = "projection"
    TIMESKIP = "timeskip"


FULL: dict[str, Any] = {  # the sizes
    "concurrency": "1,4,16,64",
    "lifecycle_rounds": 6,
    "gap": 1.0,
    "open_invoices": 10_000,
    "payments": 500,
    "scale_invoices": 50_000,
    "scale_warmup": 100,
    "scale_margin": 180.0,
    "projection_invoices": 2_000,
    "timeskip_invoices": 5,
}
QUICK: dict[str, Any] = {
    "concurrency": "1,2",
    "lifecycle_rounds": 2,
    "gap": 0.3,
    "open_invoices": 10,
    "payments": 10,
    "scale_invoices": 10,
    "scale_warmup": 3,
    "scale_margin": 3.0,
    "projection_invoices": 20,
    "timeskip_invoices": 1,
}

app = typer.Typer(add_completion=False, help=__doc__)


@app.command()
def main(
    only: Annotated[list[Name] | None, typer.Option(help="run only these measurements (repeat the option)")] = None,
    quick: Annotated[bool, typer.Option(help="smoke-test sizes: every measurement in about a minute")] = False,
    concurrency: Annotated[str | None, typer.Option(help="lifecycle: invoices in flight, e.g. 1,4,16,64")] = None,
    lifecycle_rounds: Annotated[
        int | None, typer.Option(help="lifecycle: invoices per level, in multiples of the concurrency")
    ] = None,
    gap: Annotated[float | None, typer.Option(help="lifecycle: seconds between due moment and stages")] = None,
    open_invoices: Annotated[int | None, typer.Option(help="starts: invoices (and bare workflows) opened")] = None,
    payments: Annotated[int | None, typer.Option(help="starts: record_payment round trips timed")] = None,
    scale_invoices: Annotated[int | None, typer.Option(help="scale: invoices waiting on one boundary")] = None,
    scale_warmup: Annotated[int | None, typer.Option(help="scale: invoices opened first to estimate the pace")] = None,
    scale_margin: Annotated[
        float | None, typer.Option(help="scale: seconds between the estimated end of opening and the boundary")
    ] = None,
    projection_invoices: Annotated[int | None, typer.Option(help="projection: paid invoices of 12 events each")] = None,
    timeskip_invoices: Annotated[
        int | None, typer.Option(help="time-skipping: invoices run through the full policy")
    ] = None,
    shared_stack: Annotated[
        bool | None, typer.Option(help="one stack for every measurement (default with --quick) instead of one each")
    ] = None,
    out: Annotated[Path, typer.Option(help="where the report goes")] = RESULTS,
) -> None:
    """Measure the service against do-nothing baselines on the same servers; write the report to OUT."""
    given = {
        "concurrency": concurrency,
        "lifecycle_rounds": lifecycle_rounds,
        "gap": gap,
        "open_invoices": open_invoices,
        "payments": payments,
        "scale_invoices": scale_invoices,
        "scale_warmup": scale_warmup,
        "scale_margin": scale_margin,
        "projection_invoices": projection_invoices,
        "timeskip_invoices": timeskip_invoices,
    }
    sizes = {key: value if value is not None else (QUICK if quick else FULL)[key] for key, value in given.items()}
    chosen = list(dict.fromkeys(only)) if only else list(Name)
    try:
        report = asyncio.run(run_bench(chosen, sizes, quick if shared_stack is None else shared_stack, out))
    except (asyncio.CancelledError, KeyboardInterrupt):
        typer.echo(f"interrupted: the servers it started are stopped; {out} has the measurements done so far", err=True)
        raise typer.Exit(130) from None
    written = write_report(report, out)
    console = Console()
    console.print(Markdown(markdown_table(report)))
    console.print("written: " + ", ".join(str(path) for path in written.values()))


def measurements(sizes: dict[str, Any]) -> dict[Name, Callable[[BenchStack | None, Say], Awaitable[Measurement]]]:
    """Each measurement, bound to its sizes; the time-skipping one brings its own server and takes no stack."""
    levels = [int(level) for level in str(sizes["concurrency"]).split(",") if level.strip()]
    return {
        Name.LIFECYCLE: lambda stack, say: measure_lifecycle(
            _given(stack), LifecycleSizes(levels, sizes["lifecycle_rounds"], sizes["gap"]), say
        ),
        Name.STARTS: lambda stack, say: measure_starts(
            _given(stack), StartSizes(sizes["open_invoices"], sizes["payments"]), say
        ),
        Name.SCALE: lambda stack, say: measure_scale(
            _given(stack), ScaleSizes(sizes["scale_invoices"], warmup=sizes["scale_warmup"], margin=sizes["scale_margin"]), say
        ),
        Name.PROJECTION: lambda stack, say: measure_projection(
            _given(stack), ProjectionSizes(sizes["projection_invoices"]), say
        ),
        Name.TIMESKIP: lambda _, say: measure_timeskip(TimeskipSizes(sizes["timeskip_invoices"]), say),
    }


def _given(stack: BenchStack | None) -> BenchStack:
    """The stack a measurement that needs one is given (``run_bench`` gives one to all but the time-skipping)."""
    assert stack is not None
    return stack


def _progress_line(progress: Progress, task: TaskID) -> Say:
    """A ``Say`` that shows its text as the task's progress line; where the output is not a terminal (a run left
    in the background), each line is also printed with the time, so the log tells how far it got."""

    def say(text: str) -> None:
        progress.update(task, description=text)
        if not progress.console.is_terminal:
            progress.console.print(f"{datetime.now(timezone.utc):%H:%M:%S} {text}", highlight=False)

    return say


async def run_bench(chosen: list[Name], sizes: dict[str, Any], shared_stack: bool, out: Path) -> Report:
    """Run the chosen measurements one after another, with a progress line each; the report so far
    is written to ``out`` after each, so a long run that fails late keeps what it measured.

    Each measurement gets a fresh stack, or (``shared_stack``) all share one, which saves its start-up.
    """
    this = asyncio.current_task()
    assert this is not None  # awaited in a task
    for stop_signal in (signal.SIGINT, signal.SIGTERM):  # stop in order, even when started in the background
        asyncio.get_running_loop().add_signal_handler(stop_signal, this.cancel)
    report = Report(started_at=datetime.now(timezone.utc), machine=machine(), sizes=sizes)
    runs = measurements(sizes)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn()) as progress:
        async with AsyncExitStack() as keep:
            shared: BenchStack | None = None
            for name in chosen:
                task = progress.add_task(name.value)
                say = _progress_line(progress, task)
                began = time.monotonic()
                async with AsyncExitStack() as own:
                    stack = None
                    if name != Name.TIMESKIP:
                        say(f"{name.value}: starting the embedded stack")
                        if shared_stack:
                            shared = shared or await keep.enter_async_context(BenchStack())
                            stack = shared
                        else:
                            stack = await own.enter_async_context(BenchStack(temporal=name != Name.PROJECTION))
                    measurement = await runs[name](stack, say)
                    if stack is not None:
                        measurement.details["stack_started_in_s"] = stack.started_in
                measurement.seconds = round(time.monotonic() - began, 1)
                report.measurements.append(measurement)
                write_report(report, out)
                progress.update(task, description=f"{name.value}: done in {time.monotonic() - began:.0f} s")
    return report


if __name__ == "__main__":
    app()
