################################################################################
# Shared data and names
################################################################################

data "aws_partition" "current" {}
data "aws_region" "current" {}
data "aws_caller_identity" "current" {}

data "aws_availability_zones" "available" {
  # checkov:skip=CKV_AWS_394:Zones are pinned by var.availability_zones; without it only the first availability_zone_count names (sorted, AWS appends new zones) are used, so a new zone never enters the set
  state = "available"

  filter {
    name   = "opt-in-status"
    values = ["opt-in-not-required"]
  }
}

locals {
  name       = var.name
  partition  = data.aws_partition.current.partition
  region     = data.aws_region.current.name
  account_id = data.aws_caller_identity.current.account_id
  dns_suffix = data.aws_partition.current.dns_suffix

  azs = length(var.availability_zones) > 0 ? var.availability_zones : slice(
    sort(data.aws_availability_zones.available.names), 0, var.availability_zone_count
  )

  # Tag keys the DAGs put on everything they create (and `published` on the snapshot a build
  # publishes); the Airflow policy is scoped by them. Only the DAG sets `role` (builder, cache):
  # nothing Terraform creates carries it.
  pipeline_tag_key  = "ml-cache:pipeline"
  run_id_tag_key    = "ml-cache:run-id"
  role_tag_key      = "ml-cache:role"
  published_tag_key = "ml-cache:published"

  tags = merge(var.tags, {
    (local.pipeline_tag_key) = local.name
  })

  # Names shared with the DAGs (plugins/ml_cache/defaults/ml_container_cache.yaml).
  snapshot_id_parameter_name       = "/${local.name}/snapshot-id"
  snapshot_metadata_parameter_name = "/${local.name}/snapshot-metadata"
  ssm_document_name                = "${local.name}-build"
  build_log_group_name             = coalesce(var.build_log_group_name, "/${local.name}/build")
  builder_name                     = "${local.name}-builder"

  ml_cache_base_config = yamldecode(var.ml_cache_base_config == "" ? "{}" : var.ml_cache_base_config)
}
