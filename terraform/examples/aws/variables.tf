variable "region" {
  description = "AWS region to deploy into"
  type        = string
  default     = "us-west-2"
}

variable "name" {
  description = "Pipeline name (resource prefix and `ml-cache:pipeline` tag value)"
  type        = string
  default     = "ml-container-cache"
}

variable "tags" {
  description = "Default tags of every resource; `ml-cache:` keys are the pipeline's own (IAM trusts them)"
  type        = map(string)
  default     = { Project = "ml-container-cache" }

  validation {
    condition     = alltrue([for key in keys(var.tags) : !startswith(lower(key), "ml-cache:")])
    error_message = "tags must not use the `ml-cache:` prefix: the pipeline sets those keys itself and IAM trusts them."
  }
}

variable "builder_instance_types" {
  description = "Instance types of the builder, in fallback order (the only ones the Airflow policy lets it launch)"
  type        = list(string)
  default     = ["c6i.2xlarge", "m6i.2xlarge", "c5.2xlarge"]
}

variable "builder_ami_owner_ids" {
  description = "Owner accounts of the EKS-optimized AMIs in this region (602401143452 in most; see the module's variable)"
  type        = list(string)
  default     = ["602401143452"]
}

variable "cluster_version" {
  description = "Kubernetes version of the EKS cluster"
  type        = string
  default     = "1.33"
}

variable "gpu_instance_types" {
  description = "Instance types of the GPU node group"
  type        = list(string)
  default     = ["g6e.xlarge"]
}

variable "gpu_desired_size" {
  description = "Initial number of GPU nodes"
  type        = number
  default     = 1
}

variable "uncached_baseline" {
  description = "A GPU node group without the cache at 0 nodes, scaled to 1 by each rollout to time the uncached start (one GPU node for minutes per rollout)"
  type        = bool
  default     = false
}

variable "single_nat_gateway" {
  description = "One NAT gateway for all AZs (cheaper) instead of one per AZ"
  type        = bool
  default     = true
}

variable "enable_vpc_endpoints" {
  description = "Interface/gateway endpoints for SSM, ECR, EC2, STS and S3"
  type        = bool
  default     = false
}

variable "cache_volume_size_gib" {
  description = "Size of the GPU nodes' cache volume (at least the build's volume_size_gib)"
  type        = number
  default     = 100
}

variable "airflow_kubernetes_principal_arn" {
  description = "IAM role of the Airflow workers, given a namespace-scoped EKS access entry for validation pods; null = none"
  type        = string
  default     = null
}

variable "airflow_pod_identity" {
  description = "Airflow in this cluster (Helm): namespace and service account; gets a role with every Airflow policy through EKS Pod Identity, and the access entry. null = none"
  type = object({
    namespace       = string
    service_account = string
  })
  default = null
}

variable "airflow_api_access_security_group_ids" {
  description = "Security groups of an Airflow outside the cluster allowed to reach the private Kubernetes API endpoint"
  type        = list(string)
  default     = []
}

variable "airflow_api_access_cidrs" {
  description = "CIDR blocks of an Airflow outside the VPC allowed to reach the private Kubernetes API endpoint"
  type        = list(string)
  default     = []
}

variable "ml_cache_build_config" {
  description = "Extra keys of the DAGs' `build` configuration (images, instance_types, ...)"
  type        = any
  default     = {}
}

variable "registry_credentials" {
  description = "Registry host or pattern -> credential source (ecr, secretsmanager + secret_arn, ssm_secure_parameter + parameter_name, anonymous)"
  type = map(object({
    source         = string
    secret_arn     = optional(string)
    parameter_name = optional(string)
  }))
  default = {}
}

variable "ecr_repository_arns" {
  description = "Full ARNs of the ECR repositories images come from (any account and region, no wildcard)"
  type        = list(string)
  default     = []
}

variable "registry_kms_key_arns" {
  description = "Customer managed KMS keys of the registry secrets and parameters; empty = the AWS managed keys"
  type        = list(string)
  default     = []
}

variable "registry_endpoints" {
  description = "Registry host -> URL of a pull-through mirror"
  type        = map(string)
  default     = {}
}

variable "notification_topic_arns" {
  description = "SNS topics of the DAG config's notifications.sns_topic_arn: Airflow may publish to these only"
  type        = list(string)
  default     = []
}

variable "ecr_push_repository_names" {
  description = "Build on push: ECR repositories whose pushes reach the ecr_push_queue_url queue; [] = off"
  type        = list(string)
  default     = []
}
