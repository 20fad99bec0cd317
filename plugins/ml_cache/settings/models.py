"""The settings schema: one pydantic model per config section, and the validated settings of a run.

pydantic (not a hand-written jsonschema document) because the same annotations give the
validation, the defaults, typed attribute access in the tasks, and the JSON schema the trigger
form is generated from; it ships with Airflow, so it costs no dependency. The models are strict
(no "3" -> 3 coercion) and forbid unknown keys, so a typo in the config or the form is an error
naming the key instead of a silently ignored setting.
"""

from __future__ import annotations

import importlib.util
import re

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ml_cache.builder_instance import BuilderLaunch
from ml_cache.builder_spec import validate_image_refs, validate_registry_credentials, validate_registry_endpoints
from ml_cache.images import PLATFORMS, is_sha256_digest, parse_reference, registry_allowed, validate_images
from ml_cache.registry import credential_for, ecr_registry
from ml_cache.report_budget import check_report_fits
from ml_cache.settings import fields as f

DEFAULT_INSTANCE_TYPES = ["c6i.2xlarge", "m6i.2xlarge", "c5.2xlarge"]
DEFAULT_ARM64_INSTANCE_TYPES = ["c7g.2xlarge", "m7g.2xlarge", "c6g.2xlarge"]


class Section(BaseModel):
    """Strict, closed and immutable: what was validated is what every task reads."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class AwsConfig(Section):
    """Where the builder runs and where the cache is published (Terraform's output fills it)."""

    region: f.Region | None = Field(None, description="Must equal the Airflow connection's region.")
    subnet_ids: f.unique_list(f.SubnetId) = Field([], description="Private subnets the builder runs in, tried in "
                                                   "order; a build refuses to start without them.")
    security_group_ids: f.unique_list(f.SecurityGroupId) = []
    instance_profile: f.InstanceProfile = Field(description="The builder's instance profile.")
    ssm_parameter: f.SsmParameterName = Field("/ml-container-cache/snapshot-id", description="Bare snap- id.")
    ssm_metadata_parameter: f.SsmParameterName = "/ml-container-cache/snapshot-metadata"
    ssm_document: f.SsmDocumentName = Field("ml-container-cache-build", description="Registered by the DAG.")
    build_log_group: f.LogGroupName | None = Field(
        "/ml-container-cache/build", description="CloudWatch Logs group the SSM agent streams the builder's "
                                                 "output to (its progress in the task log); None: none.")
    kms_key_id: f.KmsKeyId | None = Field(None, description="None: the account's default EBS key.")
    registry_credentials: dict[str, dict] = Field({}, description="Registry host or host pattern -> where its "
                                                  "credentials come from (builder spec schema's $defs/credential); "
                                                  "exact hosts first, then the first matching pattern; "
                                                  "none: anonymous.")
    registry_endpoints: dict[str, str] = Field({}, description="Registry host -> URL its API is reached at (a "
                                                               "pull-through mirror); none: https://<host>.")

    @field_validator("registry_credentials", mode="before")
    @classmethod
    def _credential_shape(cls, value: object) -> object:
        return validate_registry_credentials(value)  # the builder spec schema is the one definition

    @field_validator("registry_endpoints", mode="before")
    @classmethod
    def _endpoint_shape(cls, value: object) -> object:
        return validate_registry_endpoints(value)


class BuildConfig(Section):
    """What a build caches and how; every field but allowed_registries is a trigger-form field."""

    allowed_registries: list[str] = Field(min_length=1, description="Registries images may come from.")
    images: list[str] = Field(min_length=1, description="Image references to cache (registry/repo:tag or "
                                                        "@sha256:digest).")
    architecture: f.Architecture = Field("x86_64", description="CPU architecture of the GPU nodes.")
    kubernetes_version: f.KubernetesVersion = Field("1.33", description="EKS version of the AL2023 AMI the "
                                                                        "builder runs.")
    instance_types: f.unique_list(f.InstanceType, min_length=1) = Field(
        DEFAULT_INSTANCE_TYPES, description="Builder instance types of the architecture, tried in order on capacity "
                                            f"errors. arm64 types: {', '.join(DEFAULT_ARM64_INSTANCE_TYPES)} (the "
                                            "default when the config sets arm64 without types).")
    volume_size_gib: f.VolumeSizeGib | None = Field(None, description="Data volume size. Empty: computed from the "
                                                                      "resolved images (compressed + unpacked, with "
                                                                      "margin); a size too small is refused.")
    volume_iops: f.VolumeIops = Field(3000, description="Data volume gp3 IOPS.")
    volume_throughput_mibps: f.VolumeThroughput = Field(
        750, description="Data volume gp3 throughput (MiB/s) while the builder writes it; 750 is the most 3000 IOPS "
                         "allow (about $0.034 per build-hour above the free 125).")
    snapshot_name: f.SnapshotName = Field("ml-container-cache", description="Name tag of the snapshot.")
    snapshot_description: f.SnapshotDescription = Field("ML container image cache for EKS GPU nodes",
                                                        description="Snapshot description.")
    enable_fast_snapshot_restore: bool = Field(True, description="Enable FSR (costs $0.75 per AZ-hour).")
    fsr_availability_zones: f.unique_list(f.AvailabilityZone) = Field(
        [], description="AZs of the GPU node group, where FSR is enabled.")
    pull_parallelism: f.PullParallelism | None = Field(
        None, description="Images unpacked at once on the builder (their blobs are fetched over more connections). "
                          "Empty: the builder's vCPUs.")
    incremental: bool = Field(True, description="Start the data volume from the published snapshot: only new "
                                                "layers are pulled and the new snapshot is incremental.")
    force_rebuild: bool = Field(False, description="Build even when the image set, the builder and the volume "
                                                   "settings are unchanged (else such a run ends as up to date).")

    @model_validator(mode="after")
    def _rules(self) -> BuildConfig:
        f.check_gp3(self.volume_size_gib, self.volume_iops, self.volume_throughput_mibps)
        if self.enable_fast_snapshot_restore and not self.fsr_availability_zones:
            raise ValueError("fsr_availability_zones must not be empty while enable_fast_snapshot_restore is on")
        parsed = validate_images(self.images, self.allowed_registries)
        for image in parsed:  # containerd takes sha384/sha512 too; the report, fingerprint and Asset record sha256
            if image.digest is not None and not is_sha256_digest(image.digest):
                raise ValueError(f"image {str(image)!r} is pinned by {image.digest.partition(':')[0]}: the pipeline "
                                 f"verifies and publishes sha256 digests, pin it by sha256")
        images = validate_image_refs([str(ref) for ref in parsed])
        check_report_fits(images)
        update: dict[str, list[str]] = {} if images == self.images else {"images": images}
        if self.architecture == "arm64" and "instance_types" not in self.model_fields_set:
            update["instance_types"] = DEFAULT_ARM64_INSTANCE_TYPES
        other = [t for t in update.get("instance_types", self.instance_types)
                 if f.instance_architecture(t) != self.architecture]
        if other:
            raise ValueError(f"instance_types {other} are not {self.architecture} types (their family names say "
                             f"{f.instance_architecture(other[0])}): the builder must run the images' architecture")
        return self.model_copy(update=update) if update else self


class RolloutConfig(Section):
    """Where the cache is rolled out (Terraform's output) and how it is judged."""

    cluster_name: f.EksName
    node_group_name: f.EksName
    launch_template_id: f.LaunchTemplateId
    cache_device_name: f.DeviceName = "/dev/xvdb"
    kubernetes_conn_id: f.ConnectionId | None = Field(None, description="None: kubeconfig generated from EKS.")
    namespace: f.Namespace = "default"
    snapshot_id: f.SnapshotId | None = Field(None, description="Snapshot to roll out. Empty: the triggering "
                                                               "event's, else the SSM parameter's.")
    max_startup_seconds: f.StartupSeconds = Field(10, description="A validation pod slower than this fails "
                                                                  "the rollout.")
    force_update: bool = Field(False, description="EKS `force`: override PodDisruptionBudgets.")
    uncached_baseline: bool = Field(False, description="Also time each image on a node without the cache.")
    baseline_node_group_name: f.EksName | None = None


class LifecycleConfig(Section):
    """How long the cache's resources live (the FSR guard, the rollout's FSR retirement, the janitor)."""

    fsr_max_snapshots: int = Field(2, ge=1, le=5, description="Snapshots of this pipeline with FSR at once: the "
                                   "live one, plus the previous one only while a rollout to a new one runs.")
    fsr_region_quota: int = Field(5, ge=1, description="FSR-enabled snapshots the region allows (Service Quotas; "
                                                       "AWS's default is 5), ours and others'.")
    keep_published_snapshots: int = Field(3, ge=1, description="Published snapshots kept, newest first; older "
                                          "ones are deleted unless something still references them.")
    parameter_history_versions: int = Field(10, ge=1, description="Recent versions of the SSM parameter whose "
                                            "snapshots count as referenced (never deleted).")
    keep_document_versions: int = Field(5, ge=1, description="Newest SSM document versions kept (the default "
                                                             "version is always kept).")
    unpublished_snapshot_hours: float = Field(24, gt=0, description="A snapshot no run published (a failed "
                                              "build) is deleted once this old, unless referenced.")
    janitor_max_terminations: int = Field(3, ge=1, le=50, description="Safety cap: builders one janitor run may "
                                          "terminate, oldest first; the rest wait for the next run. Builders are one "
                                          "per build run, so more orphans than this means something else is wrong.")


class Prices(Section):
    """USD list prices for the cost report and the janitor's savings (us-west-2 on-demand, December 2026:
    set your region's and your discounts)."""

    fsr_per_az_hour: float = Field(0.75, ge=0, description="Fast Snapshot Restore, per snapshot per AZ-hour.")
    snapshot_per_gb_month: float = Field(0.05, ge=0, description="EBS snapshot storage (standard tier).")
    volume_per_gb_month: float = Field(0.08, ge=0, description="gp3 volume storage (the builder's volumes).")
    instance_per_hour: dict[str, float] = Field(
        {"c6i.2xlarge": 0.34, "m6i.2xlarge": 0.384, "c5.2xlarge": 0.34},
        description="On-demand price per builder instance type; a type not listed is reported without a price.")


class NotificationsConfig(Section):
    """Who hears about runs (README: Notifications). Nothing configured: no notification is sent."""

    sns_topic_arn: f.SnsTopicArn | None = Field(None, description="Standard SNS topic the messages are published "
                                                "to, through the DAG's AWS connection.")
    slack_webhook_conn_id: f.ConnectionId | None = Field(None, description="Also post to Slack through this "
                                                         "`slackwebhook` connection (needs "
                                                         "apache-airflow-providers-slack).")
    on_failure: bool = Field(True, description="A message for each failed task and each run failed without one "
                                               "(run timeout).")
    on_success: bool = Field(False, description="A message for each successful run.")
    dags: f.unique_list(f.DagName) = Field(["build", "rollout", "janitor"], description="The DAGs "
                                           "(ml_container_cache_<name>) that notify.")
    late_build_minutes: f.LateMinutes | None = Field(None, description="Deadline alert: a build still running this "
                                                     "many minutes past the average of its last successful runs "
                                                     "(needs sns_topic_arn; read when the DAG is parsed).")

    @model_validator(mode="after")
    def _channels(self) -> NotificationsConfig:
        if self.slack_webhook_conn_id is not None and importlib.util.find_spec("airflow.providers.slack") is None:
            raise ValueError("notifications.slack_webhook_conn_id needs the Slack provider, which is not installed: "
                             "add apache-airflow-providers-slack to the deployment, or remove the key")
        if self.late_build_minutes is not None and self.sns_topic_arn is None:
            raise ValueError("notifications.late_build_minutes needs notifications.sns_topic_arn (the alert's topic)")
        return self

    @property
    def channels(self) -> bool:
        return self.sns_topic_arn is not None or self.slack_webhook_conn_id is not None


class Timeouts(Section):
    """Deadlines of the deferred waits, in seconds."""

    poll_seconds: f.Seconds = 15
    agent_online_seconds: f.Seconds = 900
    build_seconds: f.BuildSeconds = 7200
    snapshot_seconds: f.Seconds = 14400
    fsr_seconds: f.Seconds = 14400
    update_seconds: f.Seconds = 3600
    validation_seconds: f.Seconds = 900
    # Added to the sum of a DAG's deadlines to give its dagrun_timeout (ml_cache.run_deadline): the
    # time its short tasks, scheduling and the retries of transient errors may take in all.
    run_margin_seconds: f.Seconds = 3600


class RunSettings(Section):
    """What every run shares: the pipeline name, the connection's region, the AWS names, deadlines."""

    pipeline: f.PipelineName
    region: f.Region
    aws: AwsConfig
    timeouts: Timeouts = Timeouts()
    lifecycle: LifecycleConfig = LifecycleConfig()
    prices: Prices = Prices()
    notifications: NotificationsConfig = NotificationsConfig()

    @model_validator(mode="after")
    def _same_region(self) -> RunSettings:
        if self.aws.region is not None and self.aws.region != self.region:
            raise ValueError(f"config aws.region {self.aws.region!r} differs from the connection's region "
                             f"{self.region!r}")
        return self


class BuildSettings(RunSettings):
    """A build run's validated settings (config `build:` merged with the trigger form)."""

    build: BuildConfig

    @model_validator(mode="after")
    def _build_rules(self) -> BuildSettings:
        if not self.aws.subnet_ids:  # fail closed: RunInstances without a subnet uses the default VPC, public IP
            raise ValueError("aws.subnet_ids is empty: set the private subnet ids the builder runs in (Terraform's "
                             "builder_subnet_ids); without them it would start in the default VPC with a public IP")
        zone = re.compile(re.escape(self.region) + r"[a-z]", re.ASCII)
        outside = [z for z in self.build.fsr_availability_zones if not zone.fullmatch(z)]
        if outside:
            raise ValueError(f"fsr_availability_zones {outside} are not availability zones of {self.region} "
                             f"({self.region}a, {self.region}b, ...)")
        for mapping in ("registry_credentials", "registry_endpoints"):
            for registry in getattr(self.aws, mapping):
                if "*" in registry:  # a credential pattern only says how allowed hosts log in: it widens nothing
                    continue
                allowed = [entry.lower() for entry in self.build.allowed_registries]
                if registry.lower() not in allowed and not registry_allowed(registry, allowed):
                    raise ValueError(f"aws.{mapping} names registry {registry!r}, not an allowed registry")
        for ref in self.build.images:
            host = parse_reference(ref).registry
            if credential_for(host, self.aws.registry_credentials)["source"] == "ecr" and not ecr_registry(host):
                raise ValueError(f"image {ref!r}: its credential source is ecr, but {host!r} is not an ECR registry "
                                 f"(<account>.dkr.ecr.<region>.amazonaws.com)")
        return self

    @property
    def platform(self) -> str:
        return PLATFORMS[self.build.architecture]

    @property
    def builder_launch(self) -> BuilderLaunch:
        """What LaunchBuilderOperator needs of these settings."""
        build, aws = self.build, self.aws
        return BuilderLaunch(
            pipeline=self.pipeline, instance_types=build.instance_types, subnet_ids=aws.subnet_ids,
            security_group_ids=aws.security_group_ids, instance_profile=aws.instance_profile,
            kms_key_id=aws.kms_key_id, volume_iops=build.volume_iops,
            volume_throughput_mibps=build.volume_throughput_mibps, build_seconds=self.timeouts.build_seconds)

    @property
    def ami_ssm_parameter(self) -> str:
        """Public SSM parameter holding the EKS-optimized AL2023 AMI id for the version/arch."""
        return (f"/aws/service/eks/optimized-ami/{self.build.kubernetes_version}/amazon-linux-2023/"
                f"{self.build.architecture}/standard/recommended/image_id")


class RolloutSettings(RunSettings):
    """A rollout run's validated settings (config `rollout:` merged with the trigger form)."""

    rollout: RolloutConfig


class JanitorSettings(RunSettings):
    """A janitor run's validated settings: what it may clean up (`lifecycle`), where the cache is live
    (`rollout`: the node group and its launch template) and whether it only reports (`dry_run`)."""

    rollout: RolloutConfig
    dry_run: bool = False

