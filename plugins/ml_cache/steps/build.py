"""Steps of ml_container_cache_build that are not waits (those are operators)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from airflow.providers.common.compat.sdk import AirflowFailException
from botocore.exceptions import BotoCoreError, ClientError

from ml_cache import metrics
from ml_cache.assets import cache_event_extra
from ml_cache.cost import up_to_date_cost_report
from ml_cache.cost_report import gather_run_cost
from ml_cache.errors import fail_fast
from ml_cache.fsr_lifecycle import retire_fsr
from ml_cache.hooks.ebs import CacheEbsHook
from ml_cache.hooks.ec2 import CacheEc2Hook
from ml_cache.hooks.registry import CacheRegistryHook
from ml_cache.hooks.ssm import CacheSsmHook
from ml_cache.images import InvalidInputs
from ml_cache.preflight import check_availability_zones, check_instance_types
from ml_cache.published import BuildProvenance, read_published, refuse_stale, snapshot_metadata
from ml_cache.published import publish_snapshot as publish_to_ssm
from ml_cache.refresh import BuildDecision, decide
from ml_cache.registry import ImageResolutionFailed
from ml_cache.report import parse_build_report, parse_quiesce_report
from ml_cache.resolution import ImageResolution, image_resolution
from ml_cache.settings import BuildSettings, load_config, resolve_build_settings
from ml_cache.ssm_document import build_document, document_digest, register_document
from ml_cache.tags import PIPELINE_TAG, PUBLISHED_TAG

log = logging.getLogger(__name__)


def validate_inputs(params: dict[str, Any] | None, *, aws_conn_id: str) -> dict[str, Any]:
    """The form merged over the config file and validated, before any AWS call (the region is the
    connection's, read from its configuration, not from AWS); trigger keys that are no Param are refused.
    Bad input fails at once: no retry changes it."""
    with fail_fast():
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


def decide_build(settings: BuildSettings, resolution: ImageResolution, *, aws_conn_id: str) -> BuildDecision:
    """Up to date (nothing to build) or build, and from which base volume: see ml_cache.refresh."""
    published = read_published(CacheSsmHook(aws_conn_id=aws_conn_id), parameter=settings.aws.ssm_parameter,
                               metadata_parameter=settings.aws.ssm_metadata_parameter)
    snapshot, fsr_states = None, {}
    if published.snapshot_id:
        ec2 = CacheEc2Hook(aws_conn_id=aws_conn_id)
        snapshot = _existing_snapshot(ec2, published.snapshot_id)
        if snapshot is not None:
            fsr_states = {entry["AvailabilityZone"]: entry["State"]
                          for entry in ec2.describe_fast_snapshot_restores(published.snapshot_id)}
    return decide(settings, resolution, builder_sha256=document_digest(build_document()), published=published,
                  snapshot=snapshot, fsr_states=fsr_states)


def _existing_snapshot(ec2: CacheEc2Hook, snapshot_id: str) -> dict[str, Any] | None:
    try:
        return ec2.describe_snapshot(snapshot_id)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") == "InvalidSnapshot.NotFound":
            return None
        raise


def up_to_date_summary(settings: BuildSettings, decision: BuildDecision, started: datetime | None, *,
                       aws_conn_id: str) -> dict[str, Any]:
    """What an up-to-date run reports: the live snapshot, why nothing was built, how long deciding took,
    and its cost ($0: no builder; the live snapshot's monthly rates)."""
    seconds = (datetime.now(UTC) - started).total_seconds() if started else None
    published = read_published(CacheSsmHook(aws_conn_id=aws_conn_id), parameter=settings.aws.ssm_parameter,
                               metadata_parameter=settings.aws.ssm_metadata_parameter)
    cost = up_to_date_cost_report(settings.prices, now=CacheEc2Hook(aws_conn_id=aws_conn_id).aws_now()[0],
                                  published_metadata=published.metadata)
    metrics.build_up_to_date(pipeline=settings.pipeline, arch=settings.build.architecture)
    return {"outcome": "up to date", "snapshot_id": decision["published_snapshot_id"],
            "fingerprint": decision["fingerprint"], "reasons": decision["reasons"],
            "instances_launched": 0, "decided_in_seconds": None if seconds is None else round(seconds, 1),
            "cost": cost}


def resolve_ami(settings: BuildSettings, *, aws_conn_id: str) -> str:
    """The builder's preflight, read-only and before its launch: the FSR zones exist and are available,
    the instance types are offered and run the platform's architecture (ml_cache.preflight); then the
    EKS-optimized AL2023 AMI from its public SSM parameter. What no retry cures fails at once."""
    build = settings.build
    with fail_fast():
        ec2 = CacheEc2Hook(aws_conn_id=aws_conn_id).conn
        if build.enable_fast_snapshot_restore:
            check_availability_zones(ec2, build.fsr_availability_zones, settings.region)
        check_instance_types(ec2, build.instance_types, build.architecture, settings.region)
        parameter = CacheSsmHook(aws_conn_id=aws_conn_id).get_parameter(settings.ami_ssm_parameter)
        if parameter is None:
            raise InvalidInputs(f"No EKS-optimized AMI parameter {settings.ami_ssm_parameter}: is Kubernetes "
                                f"{build.kubernetes_version} supported in this region?")
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


def build_provenance(decision: BuildDecision, report: dict[str, Any]) -> BuildProvenance:
    """How the snapshot's volume started, as the builder found it: a restored volume it had to
    reformat (unreadable) makes the build fresh after all."""
    base, volume = decision["base"], report.get("volume") or {}
    if base["mode"] == "incremental" and volume.get("reformatted_reason"):
        return BuildProvenance(mode="fresh", base_snapshot_id=None, bytes_pulled=volume.get("bytes_pulled"),
                               reason=f"the volume restored from {base['snapshot_id']} was unreadable and "
                                      f"reformatted: {volume['reformatted_reason']}")
    return BuildProvenance(mode=base["mode"], base_snapshot_id=base["snapshot_id"], reason=base["reason"],
                           bytes_pulled=volume.get("bytes_pulled"))


def run_cost(settings: BuildSettings, decision: BuildDecision, builder: dict[str, Any], snapshot_id: str,
             fsr_states: dict[str, str], *, aws_conn_id: str) -> dict[str, Any]:
    """This run's cost report with the pipeline's running total (ml_cache.cost_report); a cost that
    cannot be gathered is reported as such and never stops a good cache from being published."""
    ec2 = CacheEc2Hook(aws_conn_id=aws_conn_id)
    previous = read_published(CacheSsmHook(aws_conn_id=aws_conn_id), parameter=settings.aws.ssm_parameter,
                              metadata_parameter=settings.aws.ssm_metadata_parameter)
    try:
        return gather_run_cost(ec2, CacheEbsHook(aws_conn_id=aws_conn_id), prices=settings.prices,
                               builder_instance_id=builder["instance_id"], snapshot_id=snapshot_id,
                               parent_snapshot_id=decision["base"]["snapshot_id"], fsr_zones=sorted(fsr_states),
                               previous_metadata=previous.metadata, now=ec2.aws_now()[0])
    except (ClientError, BotoCoreError) as error:
        log.warning("No cost report for %s: %s", snapshot_id, error)
        return {"currency": "USD", "error": str(error)}


def publish_snapshot(settings: BuildSettings, resolution: ImageResolution, decision: BuildDecision,
                     report: dict[str, Any], snapshot_id: str, fsr_states: dict[str, str], run_id: str,
                     cost: dict[str, Any], *, aws_conn_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The published tag on the snapshot, the SSM parameters (bare id, metadata) and the
    `ml_container_cache` event's extra, in that order: an older run never overwrites a newer
    published snapshot (StalePublish)."""
    ec2 = CacheEc2Hook(aws_conn_id=aws_conn_id)
    snapshot = ec2.describe_snapshot(snapshot_id)
    metadata = snapshot_metadata(report=report, snapshot=snapshot, fsr_states=fsr_states, run_id=run_id,
                                 arch=settings.build.architecture, platform=settings.platform,
                                 volume_size_gib=resolution.volume_size_gib,
                                 fingerprint_inputs=decision["fingerprint_inputs"],
                                 build=build_provenance(decision, report), cost=cost)
    ssm, names = CacheSsmHook(aws_conn_id=aws_conn_id), settings.aws
    refuse_stale(read_published(ssm, parameter=names.ssm_parameter, metadata_parameter=names.ssm_metadata_parameter),
                 metadata, parameter=names.ssm_parameter)  # a refused snapshot never carries the published tag
    ec2.tag_resource(snapshot_id, {PUBLISHED_TAG: datetime.now(UTC).isoformat(timespec="seconds")})
    published = publish_to_ssm(ssm, parameter=names.ssm_parameter, metadata_parameter=names.ssm_metadata_parameter,
                               metadata=metadata)
    extra = cache_event_extra(metadata)
    metrics.build_published(metadata, report, pipeline=settings.pipeline)
    return {**published, **extra}, extra


def retire_unpublished_fsr(settings: BuildSettings, snapshot_id: str, *, aws_conn_id: str) -> list[str]:
    """A snapshot this run made but did not publish keeps no FSR (it would cost $0.75 per AZ-hour and
    hold one of the Region's 5 slots); the published one keeps it."""
    published = read_published(CacheSsmHook(aws_conn_id=aws_conn_id), parameter=settings.aws.ssm_parameter,
                               metadata_parameter=settings.aws.ssm_metadata_parameter)
    if published.snapshot_id == snapshot_id:
        return []
    return retire_fsr(CacheEc2Hook(aws_conn_id=aws_conn_id), snapshot_id)
