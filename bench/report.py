"""The bench report: figures (each a ratio against a baseline of the same run), JSON, a table and a plot."""

from __future__ import annotations

import math
import platform
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, computed_field, field_validator


class Target(BaseModel):
    """A goal for a figure: on its ratio, or on the measured value itself (e.g. memory in MB)."""

    on: Literal["ratio", "value"]
    op: Literal[">=", "<="]
    bound: float

    def met_by(self, value: float) -> bool:
        return value >= self.bound if self.op == ">=" else value <= self.bound

    def __str__(self) -> str:
        return f"{'ratio' if self.on == 'ratio' else 'value'} {self.op} {self.bound:g}"


class Figure(BaseModel):
    """One number of the service next to the same number of its baseline, measured in the same run."""

    name: str
    unit: str
    measured: float = Field(description="the service")
    baseline: float = Field(description="the do-nothing baseline on the same server")
    target: Target | None = None

    @field_validator("measured", "baseline")
    @classmethod
    def _positive(cls, value: float) -> float:
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"a measured value must be a positive number, not {value}")
        return value

    @computed_field  # type: ignore[prop-decorator]  # mypy cannot stack a decorator on a property (pydantic's documented workaround)
    @property
    def ratio(self) -> float:
        """measured / baseline: for a rate, 1.0 is as fast as the baseline; for a time, as quick."""
        return round(self.measured / self.baseline, 3)

    @computed_field  # type: ignore[prop-decorator]  # as above
    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        return self.target.met_by(self.ratio if self.target.on == "ratio" else self.measured)


class Measurement(BaseModel):
    """One measurement: its figures and what else it saw (sizes, process usage, diagnostics)."""

    name: str
    figures: list[Figure]
    seconds: float = 0.0  # set by the runner: the whole measurement, its stack's start included
    details: dict[str, Any] = Field(default_factory=dict)


class Report(BaseModel):
    """Everything one ``python -m bench`` run measured."""

    started_at: datetime
    machine: dict[str, Any]
    sizes: dict[str, Any]
    measurements: list[Measurement] = Field(default_factory=list)


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    import os

    import temporalio

    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "temporalio": temporalio.__version__,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


# --- output ---------------------------------------------------------------------------------


def markdown_table(report: Report) -> str:
    """One row per figure: the service, the baseline, their ratio and the target."""
    lines = [
        "| measurement | figure | dunning | baseline | ratio | target | met |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    for measurement in report.measurements:
        for figure in measurement.figures:
            target = str(figure.target) if figure.target else ""
            met = {True: "yes", False: "**no**", None: ""}[figure.met]
            lines.append(
                f"| {measurement.name} | {figure.name} | {_number(figure.measured)} {figure.unit} "
                f"| {_number(figure.baseline)} {figure.unit} | {figure.ratio:.3f} | {target} | {met} |"
            )
    return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def throughput_plot(report: Report, path: Path) -> Path | None:
    """Lifecycle throughput against concurrency, the service and its baseline; None without that measurement."""
    levels = next((m.details.get("levels") for m in report.measurements if m.name == "lifecycle"), None)
    if not levels:
        return None
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    concurrency = [level["concurrency"] for level in levels]
    figure, axes = pyplot.subplots(figsize=(7, 4.5))
    axes.plot(concurrency, [level["dunning_per_second"] for level in levels], "o-", label="dunning (real activities)")
    axes.plot(
        concurrency, [level["baseline_per_second"] for level in levels], "s--", label="baseline (no-op activities)"
    )
    axes.set_xscale("log", base=2)
    axes.set_xticks(concurrency, [str(c) for c in concurrency])
    axes.set_xlabel("invoices in flight")
    axes.set_ylabel("invoices through the lifecycle per second")
    axes.set_title("Lifecycle throughput: start, reminder, warning, late fee, payment")
    axes.grid(True, alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    pyplot.close(figure)
    return path


def write_report(report: Report, folder: Path) -> dict[str, Path]:
    """Write ``bench.json``, ``bench.md`` and (with the lifecycle measurement) ``throughput.png``."""
    folder.mkdir(parents=True, exist_ok=True)
    written = {"json": folder / "bench.json", "table": folder / "bench.md"}
    written["json"].write_text(report.model_dump_json(indent=2) + "\n")
    written["table"].write_text(markdown_table(report))
    plot = throughput_plot(report, folder / "throughput.png")
    if plot:
        written["plot"] = plot
    return written
