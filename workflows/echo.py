"""EchoJobWorkflow: the smallest job. Returns its args; can take time or fail on request
(for good, or only its first attempts, to show `retries` at work)."""

from __future__ import annotations

from typing import Any

from temporalio import workflow
from temporalio.exceptions import ApplicationError


@workflow.defn
class EchoJobWorkflow:
    @workflow.run
    async def run(self, args: dict[str, Any]) -> dict[str, Any]:
        # Names only: args may hold resolved session data, which stays out of the log.
        workflow.logger.info(
            "echo job %s got %d args (%s)", workflow.info().workflow_id, len(args), ", ".join(args)
        )
        if args.get("sleep_s"):
            await workflow.sleep(float(args["sleep_s"]))
        if args.get("fail"):
            raise ApplicationError("echo job asked to fail", non_retryable=True)
        attempt, fail_attempts = workflow.info().attempt, int(args.get("fail_attempts", 0))
        if attempt <= fail_attempts:
            raise ApplicationError(
                f"echo job asked to fail its first {fail_attempts} attempts "
                f"(this was attempt {attempt})"
            )
        return {"args": args, "ran_at": workflow.now().isoformat(), "attempt": attempt}
