"""The builder's command, watched together with the builder itself.

When an instance stops or terminates mid-command (scheduled retirement, a kernel panic, the in-guest
shutdown timer), nobody reports the invocation's end: Run Command shows it `InProgress` (`Delayed`
while a node is stopped) until its execution timeout, hours for a large build
(https://docs.aws.amazon.com/systems-manager/latest/userguide/monitor-commands.html). Only the
instance's state and StateReason say what happened, so every poll reads them too.

With `log_group` and `log_stream` (the command's stderr stream: SendCommand's CloudWatchOutputConfig),
every poll also logs the builder's new output, its progress lines formatted (ml_cache.build_progress);
trigger logs land in the task log. An error event then carries the last other stderr lines
(`stderr_tail`): GetCommandInvocation keeps only the first 8,000 characters of stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from airflow.providers.amazon.aws.exceptions import WaiterMaxAttemptsError
from airflow.providers.amazon.aws.hooks.logs import AwsLogsHook
from airflow.providers.amazon.aws.utils.waiter_with_logging import async_wait
from airflow.providers.common.compat.sdk import AirflowException
from airflow.triggers.base import TriggerEvent
from botocore.exceptions import ClientError

from ml_cache.build_progress import ProgressReader
from ml_cache.hooks.ec2 import CacheEc2Hook
from ml_cache.triggers.ssm import SsmCommandExecutedTrigger

BUILDER_ALIVE_STATES = ("pending", "running")


class BuilderCommandTrigger(SsmCommandExecutedTrigger):
    """`SsmCommandExecutedTrigger` that also fails, at once, when the builder leaves `running`.

    The error event carries `instance_lost: True` and a message naming the state and StateReason.
    """

    def __init__(self, *, log_group: str | None = None, log_stream: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.log_group, self.log_stream = log_group, log_stream
        if log_group and log_stream:
            self.serialized_fields |= {"log_group": log_group, "log_stream": log_stream}

    async def run(self) -> AsyncIterator[TriggerEvent]:
        async with contextlib.AsyncExitStack() as stack:
            logs = None
            if self.log_group and self.log_stream:
                logs = await stack.enter_async_context(
                    await AwsLogsHook(**self._hook_parameters).get_async_conn())
            reader = ProgressReader(self.log_group or "", self.log_stream or "", self.log)
            async for event in self._watch(reader, logs):
                yield event

    async def _watch(self, reader: ProgressReader, logs: Any) -> AsyncIterator[TriggerEvent]:
        ssm_hook = self.hook()
        ec2_hook = CacheEc2Hook(**self._hook_parameters)

        async def read(final: bool = False) -> None:
            if logs is not None:
                await reader.read(logs)
                if final:
                    reader.finish()

        def tail(payload: dict[str, Any]) -> TriggerEvent:
            if reader.tail:
                payload["stderr_tail"] = reader.stderr_tail()
            return TriggerEvent(payload)

        async with await ssm_hook.get_async_conn() as ssm, await ec2_hook.get_async_conn() as ec2:
            waiter = ssm_hook.get_waiter(self.waiter_name, deferrable=True, client=ssm,
                                         config_overrides=self.waiter_config_overrides)
            for attempt in range(self.attempts):
                if attempt:
                    await asyncio.sleep(self.waiter_delay)
                try:
                    await async_wait(waiter, self.waiter_delay, 1, self.waiter_args, self.failure_message,
                                     self.status_message, self.status_queries)
                except WaiterMaxAttemptsError:  # this poll: still running
                    await read()
                    lost = await self._builder_lost(ec2)
                    if lost:
                        yield tail({"status": "error", "message": lost, "instance_lost": True,
                                    self.return_key: self.return_value})
                        return
                except AirflowException as error:
                    await read(final=True)  # the agent uploads all output before it reports the end
                    yield tail(self._event_from_exception(error).payload)
                    return
                else:
                    await read(final=True)
                    yield TriggerEvent({"status": "success", self.return_key: self.return_value})
                    return
            yield tail(self._event_from_exception(WaiterMaxAttemptsError("Waiter error: max attempts reached")).payload)

    async def _builder_lost(self, ec2: Any) -> str | None:
        """Why the builder cannot finish the command (its state and StateReason), or None while it can."""
        instance_id, command_id = self.serialized_fields["instance_id"], self.serialized_fields["command_id"]
        try:
            answer = await ec2.describe_instances(InstanceIds=[instance_id])
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") != "InvalidInstanceID.NotFound":
                raise
            return f"Builder {instance_id} no longer exists while SSM command {command_id} ran"
        instance = answer["Reservations"][0]["Instances"][0]
        state = instance["State"]["Name"]
        if state in BUILDER_ALIVE_STATES:
            return None
        reason = instance.get("StateReason", {})
        return (f"Builder {instance_id} is {state} ({reason.get('Code')}: {reason.get('Message')}) while SSM "
                f"command {command_id} ran: the command cannot finish")
