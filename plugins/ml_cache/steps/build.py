"""Steps of ml_container_cache_build that are not waits (those are operators)."""

from __future__ import annotations

from typing import Any

from airflow.providers.common.compat.sdk import AirflowFailException

from ml_cache.assets import cache_event_extra
from ml_cache.hooks.ec2 import CacheEc2Hook
from ml_cache.hooks.registry import CacheRegistryHook
from ml_cache.hooks.ssm import CacheSsmHook
from ml_cache.images import InvalidInputs
from ml_cache.published import publish_snapshot as publish_to_ssm
from ml_cache.published import snapshot_metadata
from ml_cache.registry import ImageResolutionFailed
from ml_cache.report import parse_build_report, parse_quiesce_report
from ml_cache.resolution import ImageResolution, image_resolution
from ml_cache.settings import BuildSettings, load_config, resolve_build_settings
from ml_cache.ssm_document import register_document
from ml_cache.tags import PIPELINE_TAG


def validate_inputs(params: dict[str, Any] | None, *, aws_conn_id: str) -> dict[str, Any]:
    """The form merged over the config file and validated, before any AWS call (the region is the
    connection's, read from its configuration, not from AWS)."""
    region = CacheEc2Hook(aws_conn_id=aws_conn_id).conn_region_name
    return resolve_build_settings(load_config(), dict(params or {}), region=region).model_dump(mode="json")


def resolve_images(settings: BuildSettings, *, aws_conn_id: str) -> dict[str, Any]:
    """Every image resolved to its digest for our platform with its own credentials, and the volume
    sized for them, before any EC2 call: a missing image, architecture or credential fails here."""
    aws = settings.aws
    hook = CacheRegistryHook(aws_conn_id=aws_conn_id, credentials=aws.registry_credentials,
                             endpoints=aws.registry_endpoints)
    try:
        images = hook.resolve_all(settings.build.images, settings.platform)
        return image_resolution(settings, images).model_dump(mode="json")
    except ImageResolutionFailed as failed:
        if failed.permanent:  # fails at once; rate limits and unreachable registries get the task's retries
            raise AirflowFailException(str(failed)) from None
        raise
    except InvalidInputs as error:
        raise AirflowFailException(str(error)) from None


def resolve_ami(settings: BuildSettings, *, aws_conn_id: str) -> str:
    """The EKS-optimized AL2023 AMI, from its public SSM parameter."""
    parameter = CacheSsmHook(aws_conn_id=aws_conn_id).get_parameter(settings.ami_ssm_parameter)
    if parameter is None:
        raise RuntimeError(f"No EKS-optimized AMI parameter {settings.ami_ssm_parameter}: is Kubernetes "
                           f"{settings.build.kubernetes_version} supported in this region?")
    return parameter["Value"]


def register_build_script(settings: BuildSettings, *, aws_conn_id: str) -> dict[str, str]:
    """Our SSM document holds the builder script as shipped (a new version when it changed)."""
    return register_document(CacheSsmHook(aws_conn_id=aws_conn_id), settings.aws.ssm_document,
                             {PIPELINE_TAG: settings.pipeline})


def _stdout(builder: dict[str, Any], command_id: str, aws_conn_id: str) -> str:
    invocation = CacheSsmHook(aws_conn_id=aws_conn_id).get_command_invocation(command_id, builder["instance_id"])
    return invocation.get("StandardOutputContent", "")


def verify_build_report(settings: BuildSettings, resolution: ImageResolution, builder: dict[str, Any],
                        command_id: str, *, aws_conn_id: str) -> dict[str, Any]:
    """Exit 0 is not proof: every image must be in the report, unpacked, for our platform, at the digest
    resolve_images checked (the builder pulled the pinned refs). The report then names each image
    by its ref as configured."""
    report = parse_build_report(_stdout(builder, command_id, aws_conn_id), resolution.pinned_images,
                                volume_id=builder["data_volume_id"], platform=settings.platform)
    return resolution.named_as_configured(report)


def verify_quiesced(builder: dict[str, Any], command_id: str, *, aws_conn_id: str) -> dict[str, Any]:
    """containerd stopped, data synced, volume unmounted: only then is a snapshot consistent."""
    return parse_quiesce_report(_stdout(builder, command_id, aws_conn_id), volume_id=builder["data_volume_id"])


def publish_snapshot(settings: BuildSettings, resolution: ImageResolution, report: dict[str, Any], snapshot_id: str,
                     fsr_states: dict[str, str], run_id: str, *,
                     aws_conn_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The SSM parameters (bare id, metadata) and the `ml_container_cache` event's extra, in that order:
    an older run never overwrites a newer published snapshot (StalePublish)."""
    snapshot = CacheEc2Hook(aws_conn_id=aws_conn_id).describe_snapshot(snapshot_id)
    metadata = snapshot_metadata(report=report, snapshot=snapshot, fsr_states=fsr_states, run_id=run_id,
                                 arch=settings.build.architecture, platform=settings.platform,
                                 volume_size_gib=resolution.volume_size_gib)
    published = publish_to_ssm(CacheSsmHook(aws_conn_id=aws_conn_id), parameter=settings.aws.ssm_parameter,
                               metadata_parameter=settings.aws.ssm_metadata_parameter, metadata=metadata)
    extra = cache_event_extra(metadata)
    return {**published, **extra}, extra
