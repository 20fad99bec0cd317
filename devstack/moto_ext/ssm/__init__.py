"""SSM for sandbox instances: agent registration, Run Command that really runs, EKS AMI parameters."""

from __future__ import annotations

from moto.ssm.models import Command
from moto.ssm.responses import SimpleSystemManagerResponse

from devstack.moto_ext import _patch
from devstack.moto_ext.ssm import models, responses


def install() -> None:
    _patch.replace(SimpleSystemManagerResponse, "describe_instance_information",
                   lambda _orig: responses.describe_instance_information)
    _patch.replace(SimpleSystemManagerResponse, "send_command", responses.send_command)
    _patch.replace(SimpleSystemManagerResponse, "get_command_invocation",
                   lambda _orig: responses.get_command_invocation)
    _patch.replace(SimpleSystemManagerResponse, "list_command_invocations",
                   lambda _orig: responses.list_command_invocations)
    _patch.replace(SimpleSystemManagerResponse, "cancel_command", lambda _orig: responses.cancel_command)
    _patch.replace(SimpleSystemManagerResponse, "list_document_versions",
                   lambda _orig: responses.list_document_versions)
    _patch.replace(Command, "response_object", responses.command_response_object)
    for name in ("get_parameter", "get_parameters", "get_parameters_by_path"):
        _patch.replace(SimpleSystemManagerResponse, name, responses.with_eks_amis)


def reset() -> None:
    models.reset()
