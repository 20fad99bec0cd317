"""CustomWaitersMixin: a hook reads plugins/ml_cache/waiters/<client>.json, or no custom file at all."""

from __future__ import annotations

from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

from ml_cache.hooks._waiters import WAITERS_DIR, CustomWaitersMixin
from ml_cache.hooks.ec2 import CacheEc2Hook


class _S3Hook(CustomWaitersMixin, AwsBaseHook):
    def __init__(self) -> None:
        super().__init__(aws_conn_id=None, client_type="s3", region_name="us-west-2")


def test_our_waiters_are_the_client_json_in_the_package() -> None:
    hook = CacheEc2Hook(aws_conn_id=None, region_name="us-west-2")
    assert hook.cache_waiter_path == WAITERS_DIR / "ec2.json"
    assert WAITERS_DIR.parent.name == "ml_cache"


def test_no_json_for_the_client_means_botocore_waiters_only() -> None:
    hook = _S3Hook()
    assert hook.cache_waiter_path is None
    assert "bucket_exists" in hook.list_waiters()


def test_the_providers_own_waiters_stay_available() -> None:
    """EksHook ships eks.json (all_nodegroups_deleted...): ours come on top, they do not replace it."""
    from airflow.providers.amazon.aws.hooks.eks import EksHook

    from ml_cache.hooks.eks import CacheEksHook

    ours = CacheEksHook(aws_conn_id=None, region_name="us-west-2")
    assert set(EksHook(aws_conn_id=None, region_name="us-west-2").list_waiters()) < set(ours.list_waiters())
    assert "nodegroup_update_successful" in ours.list_waiters()
    assert ours.get_waiter("all_nodegroups_deleted").name == "all_nodegroups_deleted"


def test_custom_and_botocore_waiters_are_both_listed() -> None:
    waiters = CacheEc2Hook(aws_conn_id=None, region_name="us-west-2").list_waiters()
    assert {"fast_snapshot_restores_enabled", "instance_running", "snapshot_completed"} <= set(waiters)
