################################################################################
# The same module applied into the local cloud (a moto server, devstack/):
# every AWS service endpoint points at one URL, credentials are dummies.
################################################################################

provider "aws" {
  region     = var.region
  access_key = "testing"
  secret_key = "testing"

  skip_credentials_validation = true
  skip_metadata_api_check     = true
  skip_region_validation      = true
  skip_requesting_account_id  = false

  endpoints {
    ec2    = var.endpoint_url
    eks    = var.endpoint_url
    events = var.endpoint_url
    iam    = var.endpoint_url
    kms    = var.endpoint_url
    logs   = var.endpoint_url
    sqs    = var.endpoint_url
    ssm    = var.endpoint_url
    sts    = var.endpoint_url
  }
}

module "ml_container_cache" {
  source = "../.."

  name = var.name

  # Private registries: the builder and Airflow may read exactly these sources (README.md).
  registry_credentials  = var.registry_credentials
  ecr_repository_arns   = var.ecr_repository_arns
  registry_kms_key_arns = var.registry_kms_key_arns
  registry_endpoints    = var.registry_endpoints

  # Build on push: a push (ECR PutImage) to one of these local ECR repositories reaches the queue.
  ecr_push_events = length(var.ecr_push_repository_names) > 0 ? { repository_names = var.ecr_push_repository_names } : null

  # The DAGs' config file, completed with this deployment's ids by the ml_cache_config output.
  ml_cache_base_config = file("${path.root}/../../../plugins/ml_cache/defaults/ml_container_cache.yaml")

  # The emulator has no EKS add-on or access-entry API; everything else is the AWS shape.
  enable_cluster_addons                    = false
  enable_cluster_creator_admin_permissions = false

  gpu_instance_types = ["g6e.xlarge"]
  gpu_desired_size   = 1
  uncached_baseline  = var.uncached_baseline
}
