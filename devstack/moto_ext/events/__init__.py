"""EventBridge for the local cloud: rules deliver to SQS as AWS does, only what the queue policy allows."""

from __future__ import annotations

from moto.events.models import Rule
from moto.events.utils import EventTemplateParser

from devstack.moto_ext import _patch
from devstack.moto_ext.events import models


def install() -> None:
    _patch.replace(Rule, "send_to_targets", models.send_to_targets)
    _patch.replace(Rule, "_send_to_sqs_queue", models.send_to_sqs_queue)
    # A target without an input transformer gets the whole event; moto's default template drops `account`.
    EventTemplateParser.DEFAULT_EVENT_INPUT_TEMPLATE = models.WHOLE_EVENT_TEMPLATE
