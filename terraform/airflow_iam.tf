################################################################################
# Airflow worker policies: attach every one of them (output airflow_policy_arns)
# to the MWAA execution role, a Pod Identity role or the instance role of the
# Airflow workers. Up to three, because a managed policy holds 6,144 characters
# (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_iam-quotas.html):
# the DAG calls, launching a builder, and the registry reads.
################################################################################

module "airflow_policy" {
  source = "./modules/airflow-policy"

  partition  = local.partition
  region     = local.region
  account_id = local.account_id
  pipeline   = local.name

  pipeline_tag_key  = local.pipeline_tag_key
  run_id_tag_key    = local.run_id_tag_key
  role_tag_key      = local.role_tag_key
  published_tag_key = local.published_tag_key

  parameter_names              = [local.snapshot_id_parameter_name, local.snapshot_metadata_parameter_name]
  ssm_document_name            = local.ssm_document_name
  builder_role_arn             = aws_iam_role.builder.arn
  builder_instance_profile_arn = aws_iam_instance_profile.builder.arn
  vpc_arn                      = aws_vpc.this.arn
  builder_subnet_ids           = aws_subnet.private[*].id
  builder_security_group_ids   = [aws_security_group.builder.id]
  builder_instance_types       = var.builder_instance_types
  builder_ami_owner_ids        = var.builder_ami_owner_ids
  cluster_name                 = aws_eks_cluster.this.name
  node_group_name              = aws_eks_node_group.gpu.node_group_name
  baseline_node_group_name     = one(aws_eks_node_group.gpu_baseline[*].node_group_name)
  launch_template_id           = aws_launch_template.gpu["gpu"].id
  kms_key_arn                  = var.kms_key_arn
  notification_topic_arns      = var.notification_topic_arns
  build_log_group_arn          = aws_cloudwatch_log_group.build.arn
}

resource "aws_iam_policy" "airflow" {
  name        = "${local.name}-airflow"
  description = "What the ml_container_cache Airflow DAGs call: builder lifecycle, snapshots, FSR, parameters, node group rollout"
  policy      = module.airflow_policy.json

  tags = local.tags
}

resource "aws_iam_policy" "airflow_launch" {
  name        = "${local.name}-airflow-launch"
  description = "What the ml_container_cache build DAG launches: builders only (role=builder tags, EKS AMIs, configured types, subnets, security groups and profile)"
  policy      = module.airflow_policy.launch_json

  tags = local.tags
}

# What resolve_images reads to reach the configured registries; only when some are configured.
resource "aws_iam_policy" "airflow_registry" {
  count = module.registry_read_policy.json == null ? 0 : 1

  name        = "${local.name}-airflow-registry"
  description = "What the ml_container_cache Airflow DAGs read to resolve images: the configured registries' credentials"
  policy      = module.registry_read_policy.json

  tags = local.tags
}

################################################################################
# Optional: Airflow running in this cluster (the official Helm chart) gets its AWS
# identity through EKS Pod Identity: a role holding every Airflow policy above,
# associated with the one Kubernetes service account its workers, triggerer and
# DAG processor share (deploy/helm/values.yaml). The same role gets the
# namespace-scoped access entry of eks.tf, so validation pods need nothing more.
# https://docs.aws.amazon.com/eks/latest/userguide/pod-identities.html
################################################################################

data "aws_iam_policy_document" "airflow_pod_identity_assume" {
  statement {
    actions = ["sts:AssumeRole", "sts:TagSession"]
    principals {
      type        = "Service"
      identifiers = ["pods.eks.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "airflow" {
  count = var.airflow_pod_identity != null ? 1 : 0

  name_prefix        = "${local.name}-airflow-"
  description        = "Airflow of ${local.name} (service account ${var.airflow_pod_identity.namespace}/${var.airflow_pod_identity.service_account}), through EKS Pod Identity"
  assume_role_policy = data.aws_iam_policy_document.airflow_pod_identity_assume.json

  tags = local.tags
}

resource "aws_iam_role_policy_attachment" "airflow" {
  # Static keys (known at plan); the registry and push policies only when they exist.
  for_each = var.airflow_pod_identity == null ? {} : merge(
    { calls = aws_iam_policy.airflow.arn, launch = aws_iam_policy.airflow_launch.arn },
    { for policy in aws_iam_policy.airflow_registry : "registry" => policy.arn },
    { for policy in aws_iam_policy.airflow_push : "push" => policy.arn },
  )

  role       = aws_iam_role.airflow[0].name
  policy_arn = each.value
}

resource "aws_eks_pod_identity_association" "airflow" {
  count = var.airflow_pod_identity != null ? 1 : 0

  cluster_name    = aws_eks_cluster.this.name
  namespace       = var.airflow_pod_identity.namespace
  service_account = var.airflow_pod_identity.service_account
  role_arn        = aws_iam_role.airflow[0].arn

  tags = local.tags
}
