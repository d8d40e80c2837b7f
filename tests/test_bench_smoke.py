"""The benchmark at tiny sizes: it runs end to end and its report has the promised shape.

Not the targets: absolute and relative speeds on a shared machine say nothing at these sizes.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
TINY = [
    "--quick",
    "--concurrency",
    "1",
    "--lifecycle-rounds",
    "1",
    "--open-invoices",
    "3",
    "--payments",
    "3",
    "--scale-invoices",
    "3",
    "--scale-warmup",
    "1",
    "--scale-margin",
    "2",
    "--projection-invoices",
    "5",
    "--timeskip-invoices",
    "1",
]
MEASUREMENTS = ["lifecycle", "starts_and_payments", "scale", "projection", "time_skipping"]


def test_quick_bench_writes_a_report_with_a_positive_ratio_for_every_figure(tmp_path):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    run = subprocess.run(
        [sys.executable, "-m", "bench", *TINY, "--out", str(tmp_path)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    report = json.loads((tmp_path / "bench.json").read_text())
    assert [m["name"] for m in report["measurements"]] == MEASUREMENTS
    for measurement in report["measurements"]:
        assert measurement["figures"], f"{measurement['name']} has no figure"
        for figure in measurement["figures"]:
            for key in ("measured", "baseline", "ratio"):
                value = figure[key]
                assert isinstance(value, (int, float)) and math.isfinite(value) and value > 0, (
                    measurement["name"],
                    figure,
                )
            assert figure["ratio"] == round(figure["measured"] / figure["baseline"], 3)
            if figure["target"] is not None:
                assert isinstance(figure["met"], bool)

    by_name = {m["name"]: m for m in report["measurements"]}
    level = by_name["lifecycle"]["details"]["levels"][0]
    assert level["concurrency"] == 1
    # the dev server's own counters: one start and one update per lifecycle, on either side
    for side in ("dev_server_requests_per_invoice", "dev_server_requests_per_baseline_workflow"):
        assert level[side]["frontend:StartWorkflowExecution"] == 1.0, level[side]
        assert level[side]["frontend:UpdateWorkflowExecution"] == 1.0, level[side]
    assert set(level["cpu_s_per_invoice"]) == {"worker", "dev_server", "postgres", "driver"}
    # the worker's SDK histograms: its invoice workflow tasks and its activities, and the customer's share of them
    assert level["worker_task_s_per_invoice"]["workflow:InvoiceWorkflow"] > 0, level["worker_task_s_per_invoice"]
    assert level["worker_task_s_per_invoice"]["activity:send_notice"] > 0, level["worker_task_s_per_invoice"]
    assert level["worker_task_s_per_invoice"]["workflow:CustomerWorkflow"] > 0, level["worker_task_s_per_invoice"]
    assert 0 < level["customer_share_of_worker_cpu"] < 1  # each invoice registers with its customer, which it pays
    assert by_name["starts_and_payments"]["details"]["open_invoices"] == 3
    assert by_name["starts_and_payments"]["details"]["projection_lag_while_issuing_s"]["samples"] >= 1
    assert by_name["scale"]["details"]["open_invoices"] == 3
    assert by_name["time_skipping"]["details"]["history_shape"]["updates"] == 1
    # the projection measurement replays what the workflow really wrote, snapshots and all
    assert by_name["projection"]["details"]["read_model_rows"]["projected_invoices"] == 5
    assert by_name["projection"]["details"]["read_model_rows"]["projected_invoice_story"] > 0

    table = (tmp_path / "bench.md").read_text()
    assert table.count("\n") == 2 + sum(len(m["figures"]) for m in report["measurements"])
    assert (tmp_path / "throughput.png").read_bytes().startswith(b"\x89PNG")
