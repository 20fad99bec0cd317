"""IAM's managed policy size quota, which moto reports (GetAccountSummary) but does not enforce.

https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_iam-quotas.html: a managed policy holds at
most 6,144 characters, and IAM does not count white space. CreatePolicy and CreatePolicyVersion
over it fail with LimitExceeded, so a `terraform apply` of a too large policy fails here as on AWS.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from moto.iam.exceptions import LimitExceededException

MANAGED_POLICY_CHARACTERS = 6144


def managed_policy_size(document: str) -> int:
    """Characters IAM counts against the quota: every character but white space."""
    return len(re.sub(r"\s", "", document))


def check_managed_policy_size(document: str) -> None:
    """Raise IAM's LimitExceeded when the document is over the managed policy quota."""
    if managed_policy_size(document) > MANAGED_POLICY_CHARACTERS:
        raise LimitExceededException(f"Cannot exceed quota for PolicySize: {MANAGED_POLICY_CHARACTERS}")


def create_policy(original: Callable[..., Any]) -> Callable[..., Any]:
    def handler(self: Any, description: str, path: str, policy_document: str, policy_name: str,
                tags: list[dict[str, str]]) -> Any:
        check_managed_policy_size(policy_document)
        return original(self, description, path, policy_document, policy_name, tags)

    return handler


def create_policy_version(original: Callable[..., Any]) -> Callable[..., Any]:
    def handler(self: Any, policy_arn: str, policy_document: str, set_as_default: bool) -> Any:
        check_managed_policy_size(policy_document)
        return original(self, policy_arn, policy_document, set_as_default)

    return handler
