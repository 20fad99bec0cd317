################################################################################
# Airflow worker policy: attach it to the MWAA execution role, a Pod Identity
# role or the instance role of the Airflow workers
################################################################################

module "airflow_policy" {
  source = "./modules/airflow-policy"

  partition  = local.partition
  region     = local.region
  account_id = local.account_id
  pipeline   = local.name

  pipeline_tag_key  = local.pipeline_tag_key
  run_id_tag_key    = local.run_id_tag_key
  published_tag_key = local.published_tag_key

  parameter_names              = [local.snapshot_id_parameter_name, local.snapshot_metadata_parameter_name]
  ssm_document_name            = local.ssm_document_name
  builder_role_arn             = aws_iam_role.builder.arn
  builder_instance_profile_arn = aws_iam_instance_profile.builder.arn
  vpc_arn                      = aws_vpc.this.arn
  cluster_name                 = aws_eks_cluster.this.name
  node_group_name              = aws_eks_node_group.gpu.node_group_name
  launch_template_id           = aws_launch_template.gpu.id
  kms_key_arn                  = var.kms_key_arn
  registry_statements          = module.registry_read_policy.statements
}

resource "aws_iam_policy" "airflow" {
  name        = "${local.name}-airflow"
  description = "What the ml_container_cache Airflow DAGs call: builder lifecycle, snapshots, FSR, parameters, node group rollout"
  policy      = module.airflow_policy.json

  tags = local.tags
}
