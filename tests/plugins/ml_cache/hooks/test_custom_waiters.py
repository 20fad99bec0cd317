"""CustomWaitersMixin: a hook reads plugins/ml_cache/waiters/<client>.json, or no custom file at all."""

from __future__ import annotations

from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

from ml_cache.hooks._waiters import WAITERS_DIR, CustomWaitersMixin
from ml_cache.hooks.ec2 import CacheEc2Hook


class _S3Hook(CustomWaitersMixin, AwsBaseHook):
    def __init__(self) -> None:
        super().__init__(aws_conn_id=None, client_type="s3", region_name="us-west-2")


def test_waiter_path_is_the_client_json_in_the_package() -> None:
    hook = CacheEc2Hook(aws_conn_id=None, region_name="us-west-2")
    assert hook.waiter_path == WAITERS_DIR / "ec2.json"
    assert WAITERS_DIR.parent.name == "ml_cache"


def test_no_json_for_the_client_means_botocore_waiters_only() -> None:
    hook = _S3Hook()
    assert hook.waiter_path is None
    assert "bucket_exists" in hook.list_waiters()


def test_custom_and_botocore_waiters_are_both_listed() -> None:
    waiters = CacheEc2Hook(aws_conn_id=None, region_name="us-west-2").list_waiters()
    assert {"fast_snapshot_restores_enabled", "instance_running", "snapshot_completed"} <= set(waiters)
