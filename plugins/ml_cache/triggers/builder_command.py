"""The builder's command, watched together with the builder itself.

When an instance stops or terminates mid-command (scheduled retirement, a kernel panic, the in-guest
shutdown timer), nobody reports the invocation's end: Run Command shows it `InProgress` (`Delayed`
while a node is stopped) until its execution timeout, hours for a large build
(https://docs.aws.amazon.com/systems-manager/latest/userguide/monitor-commands.html). Only the
instance's state and StateReason say what happened, so every poll reads them too.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow.providers.amazon.aws.exceptions import WaiterMaxAttemptsError
from airflow.providers.amazon.aws.utils.waiter_with_logging import async_wait
from airflow.providers.common.compat.sdk import AirflowException
from airflow.triggers.base import TriggerEvent
from botocore.exceptions import ClientError

from ml_cache.hooks.ec2 import CacheEc2Hook
from ml_cache.triggers.ssm import SsmCommandExecutedTrigger

BUILDER_ALIVE_STATES = ("pending", "running")


class BuilderCommandTrigger(SsmCommandExecutedTrigger):
    """`SsmCommandExecutedTrigger` that also fails, at once, when the builder leaves `running`.

    The error event carries `instance_lost: True` and a message naming the state and StateReason.
    """

    async def run(self) -> AsyncIterator[TriggerEvent]:
        ssm_hook = self.hook()
        ec2_hook = CacheEc2Hook(**self._hook_parameters)
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
                    lost = await self._builder_lost(ec2)
                    if lost:
                        yield TriggerEvent({"status": "error", "message": lost, "instance_lost": True,
                                            self.return_key: self.return_value})
                        return
                except AirflowException as error:
                    yield self._event_from_exception(error)
                    return
                else:
                    yield TriggerEvent({"status": "success", self.return_key: self.return_value})
                    return
            yield self._event_from_exception(WaiterMaxAttemptsError("Waiter error: max attempts reached"))

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
