################################################################################
# ML container image cache in AWS: VPC, EKS with a cached GPU node group,
# builder and Airflow IAM. See terraform/README.md for the order and costs.
################################################################################

provider "aws" {
  region = var.region

  default_tags {
    tags = var.tags
  }
}

module "ml_container_cache" {
  source = "../.."

  name                                  = var.name
  cluster_version                       = var.cluster_version
  gpu_instance_types                    = var.gpu_instance_types
  gpu_desired_size                      = var.gpu_desired_size
  uncached_baseline                     = var.uncached_baseline
  single_nat_gateway                    = var.single_nat_gateway
  enable_vpc_endpoints                  = var.enable_vpc_endpoints
  cache_volume_size_gib                 = var.cache_volume_size_gib
  airflow_kubernetes_principal_arn      = var.airflow_kubernetes_principal_arn
  airflow_pod_identity                  = var.airflow_pod_identity
  airflow_api_access_security_group_ids = var.airflow_api_access_security_group_ids
  airflow_api_access_cidrs              = var.airflow_api_access_cidrs
  ml_cache_build_config                 = var.ml_cache_build_config
  builder_instance_types                = var.builder_instance_types
  builder_ami_owner_ids                 = var.builder_ami_owner_ids

  # Private registries: the builder and Airflow may read exactly these sources (README.md).
  registry_credentials  = var.registry_credentials
  ecr_repository_arns   = var.ecr_repository_arns
  registry_kms_key_arns = var.registry_kms_key_arns
  registry_endpoints    = var.registry_endpoints

  # Notifications and build on push (README.md: Notifications, Build on push); both off by default.
  notification_topic_arns = var.notification_topic_arns
  ecr_push_events         = length(var.ecr_push_repository_names) > 0 ? { repository_names = var.ecr_push_repository_names } : null

  # The DAGs' config file, completed with this deployment's ids by the ml_cache_config output.
  ml_cache_base_config = file("${path.root}/../../../plugins/ml_cache/defaults/ml_container_cache.yaml")
}
