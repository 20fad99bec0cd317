"""What moto 5.2.5's EventBridge skips, so a wrong queue policy or a disabled rule shows here too.

* The event a target gets carries `account`, as every EventBridge event does.

* A DISABLED rule delivers nothing (https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-rules.html).
* EventBridge sends to an SQS queue only when the queue's policy lets the service principal
  events.amazonaws.com call sqs:SendMessage on it, with conditions such as aws:SourceArn naming the
  rule (https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-use-resource-based.html#eb-sqs-permissions);
  otherwise the invocation fails and the event is dropped (the rule's FailedInvocations metric).
  Evaluated here: Allow/Deny statements, Principal (Service or "*"), Action, Resource, and the
  Arn*/String* operators on aws:SourceArn and aws:SourceAccount. An unknown condition never matches,
  so a policy this model cannot read denies rather than allows.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)
PRINCIPAL = "events.amazonaws.com"
# The envelope AWS delivers (https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-events-structure.html):
# moto 5.2.5's default input template has every field but `account`.
WHOLE_EVENT_TEMPLATE = ('{"version": "0", "id": "<id>", "detail-type": "<detail-type>", "source": "<source>", '
                        '"account": "<account>", "time": <time>, "region": "<region>", "resources": <resources>, '
                        '"detail": <detail>}')


def send_to_targets(original: Callable[..., Any]) -> Callable[..., Any]:
    def send_to_targets(self: Any, original_event: Any, transform_input: bool = True) -> None:
        if getattr(self, "state", "ENABLED") != "ENABLED":
            return
        original(self, original_event, transform_input)

    return send_to_targets


def send_to_sqs_queue(original: Callable[..., Any]) -> Callable[..., Any]:
    def _send_to_sqs_queue(self: Any, resource_id: str, event: dict[str, Any], group_id: str | None = None) -> None:
        from moto.sqs.models import sqs_backends

        queue = sqs_backends[self.account_id][self.region_name].queues.get(resource_id)
        if queue is None:
            log.warning("EventBridge rule %s: target queue %s does not exist; event dropped", self.arn, resource_id)
            return
        if not queue_policy_allows(queue.policy, queue.queue_arn, self.arn, self.account_id):
            log.warning("EventBridge rule %s: the policy of queue %s does not allow it to send; event dropped",
                        self.arn, resource_id)
            return
        original(self, resource_id, event, group_id)

    return _send_to_sqs_queue


def queue_policy_allows(policy: str | None, queue_arn: str, rule_arn: str, account: str) -> bool:
    """Whether EventBridge, for `rule_arn`, may sqs:SendMessage to `queue_arn` under `policy` (JSON text)."""
    import json

    if not policy:
        return False
    statements = json.loads(policy).get("Statement") or []
    statements = [statements] if isinstance(statements, dict) else statements
    context = {"aws:sourcearn": rule_arn, "aws:sourceaccount": account}
    matching = [s for s in statements if _applies(s, queue_arn, context)]
    return any(s.get("Effect") == "Allow" for s in matching) and not any(s.get("Effect") == "Deny" for s in matching)


def _listed(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value or [])


def _applies(statement: dict[str, Any], queue_arn: str, context: dict[str, str]) -> bool:
    principal = statement.get("Principal")
    principals = ["*"] if principal == "*" else _listed((principal or {}).get("Service")) + [
        p for p in _listed((principal or {}).get("AWS")) if p == "*"]
    if not any(p in ("*", PRINCIPAL) for p in principals):
        return False
    if not any(fnmatch.fnmatchcase("sqs:sendmessage", a.lower()) for a in _listed(statement.get("Action"))):
        return False
    if not any(fnmatch.fnmatchcase(queue_arn, r) for r in _listed(statement.get("Resource"))):
        return False
    return all(_condition(operator, block, context) for operator, block in (statement.get("Condition") or {}).items())


def _condition(operator: str, block: dict[str, Any], context: dict[str, str]) -> bool:
    for key, wanted in block.items():
        actual = context.get(key.lower())
        if actual is None:
            return False
        values = _listed(wanted)
        if operator in ("ArnEquals", "StringEquals"):
            ok = actual in values
        elif operator in ("ArnLike", "StringLike"):
            ok = any(fnmatch.fnmatchcase(actual, value) for value in values)
        else:
            return False
        if not ok:
            return False
    return True
