"""A trivial workflow and activity for the SDK metrics and tracing tests (its own module: the
workflow sandbox re-imports it, and the test module imports servers the sandbox refuses)."""

from datetime import timedelta

from temporalio import activity, workflow


@activity.defn
async def greet(name: str) -> str:
    return f"Hello, {name}"


@workflow.defn
class GreetingWorkflow:
    @workflow.run
    async def run(self, name: str) -> str:
        return await workflow.execute_activity(greet, name, start_to_close_timeout=timedelta(seconds=10))
