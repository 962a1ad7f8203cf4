"""The `ExecuteAgent` workflow: one execution, one `RunAgent` activity, a human failure reason.

The contract with stigmer-server (which starts the workflow through Temporal's HTTP
API): workflow ID = execution ID, task queue `agent_execution_runner`, ONE input
payload, a JSON object `{"execution_id", "agent", "input"}`, ONE json/plain result,
the agent's output text. A failed execution fails the workflow with a non-retryable
`ApplicationError` whose `message` is the reason the server shows as is.

The workflow only schedules the activity: agents, files and HTTP stay in the
activity, so this module imports nothing but the SDK and runs in Temporal's
workflow sandbox. Retries are the activity's: a runner killed mid-activity misses
its heartbeats, and the retry runs on the restarted runner a few seconds later.
https://docs.temporal.io/encyclopedia/detecting-activity-failures#heartbeat-timeout
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, TimeoutError

WORKFLOW_NAME = "ExecuteAgent"
ACTIVITY_NAME = "RunAgent"

# A dead runner is noticed after this long without a heartbeat; the activity beats
# every second (see activities.HEARTBEAT_INTERVAL_SECONDS), so a busy one never trips it.
HEARTBEAT_TIMEOUT = timedelta(seconds=5)
# The upper bound for one attempt: the slowest agent is pr-reviewer waiting for an
# Ollama answer (120 s timeout). Dead runners are caught by the heartbeat, not by this.
START_TO_CLOSE_TIMEOUT = timedelta(minutes=10)

# Error types the activity raises for input no retry can fix; listed here as well so
# the policy says so even if an activity forgets `non_retryable=True`.
UNKNOWN_AGENT = "UnknownAgent"
INVALID_INPUT = "InvalidInput"
AGENT_FAILED = "AgentFailed"
# Raised by an activity cancelled because its runner is shutting down: retried.
WORKER_SHUTDOWN = "WorkerShutdown"

RETRY_POLICY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=5),
    maximum_attempts=5,
    non_retryable_error_types=[UNKNOWN_AGENT, INVALID_INPUT, AGENT_FAILED],
)


@dataclass(frozen=True)
class ExecuteAgentInput:
    execution_id: str
    agent: str
    input: str

    @classmethod
    def from_json(cls, data: Any) -> ExecuteAgentInput:
        """Validate the server's JSON object; a `ValueError` names what is wrong."""
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object with execution_id, agent, input; got {type(data).__name__}")
        fields = {}
        for name in ("execution_id", "agent", "input"):
            value = data.get(name, "" if name == "input" else None)
            if not isinstance(value, str):
                raise ValueError(f"field {name!r} must be a string, got {value!r}")
            fields[name] = value
        return cls(**fields)


@workflow.defn(name=WORKFLOW_NAME)
class ExecuteAgent:
    @workflow.run
    async def run(self, request: Any) -> str:
        # Taken as plain JSON and validated here: decoding straight into the dataclass
        # would turn a malformed input into a workflow *task* failure, which Temporal
        # retries forever instead of failing the execution with a reason.
        try:
            agent_input = ExecuteAgentInput.from_json(request)
        except ValueError as error:
            raise ApplicationError(f"invalid input: {error}", type=INVALID_INPUT, non_retryable=True) from None
        try:
            return await workflow.execute_activity(
                ACTIVITY_NAME,
                agent_input,
                result_type=str,
                start_to_close_timeout=START_TO_CLOSE_TIMEOUT,
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=RETRY_POLICY,
            )
        except ActivityError as error:
            raise ApplicationError(failure_reason(error), type=AGENT_FAILED, non_retryable=True) from None


def failure_reason(error: ActivityError) -> str:
    """The one line the user reads: the agent's own message, else what Temporal saw."""
    cause = error.cause
    if isinstance(cause, ApplicationError):
        return cause.message
    if isinstance(cause, TimeoutError):
        kind = cause.type.name.lower().replace("_", "-") if cause.type is not None else "an unknown"
        retries = error.retry_state.name.lower().replace("_", " ") if error.retry_state is not None else "not retried"
        return f"the agent did not finish: {kind} timeout ({retries})"
    return str(cause or error)
