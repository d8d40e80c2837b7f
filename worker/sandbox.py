"""The workflow sandbox, configured once for the worker, the tests and the replayer."""

from __future__ import annotations

import dataclasses

from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions


def workflow_runner() -> SandboxedWorkflowRunner:
    """The workflow sandbox with the project's pure modules passed through (loaded once, not per run).

    ``zoneinfo.ZoneInfo`` is unrestricted so local dates can be computed: the sandbox only guards
    its cache-clearing and file-loading members, which the workflows never call.
    """
    restrictions = SandboxRestrictions.default.with_passthrough_modules(
        "workflows.models",
        "workflows.events",
        "workflows.snapshot",
        "workflows.ladder",
        "workflows.contracts",
        "workflows.policy",
        "workflows.state",
        "workflows.patches",
        "workflows.outbox",
        "workflows.publishing",
        "workflows.suspension",
        "workflows.agency",
        "workflows.payments",
        "workflows.decisions",
        "workflows.steps",
        "workflows.charges",
        "workflows.holds",
        "workflows.customer_holds",
        "workflows.customer_view",
        "pydantic",
        "babel",
        "email_validator",
        "idna",
    )
    members = restrictions.invalid_module_members.with_child_unrestricted("zoneinfo", "ZoneInfo")
    return SandboxedWorkflowRunner(restrictions=dataclasses.replace(restrictions, invalid_module_members=members))
