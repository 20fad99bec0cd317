variable "partition" {
  description = "AWS partition of the ARNs (aws, aws-cn, aws-us-gov)"
  type        = string
}

variable "region" {
  description = "Region the pipeline runs in"
  type        = string
}

variable "account_id" {
  description = "Account that owns the pipeline's resources"
  type        = string
}

variable "pipeline" {
  description = "Pipeline name: the value of the pipeline tag every resource the DAGs create carries"
  type        = string
}

variable "pipeline_tag_key" {
  description = "Tag key holding the pipeline name"
  type        = string
  default     = "ml-cache:pipeline"
}

variable "run_id_tag_key" {
  description = "Tag key holding the Airflow run id"
  type        = string
  default     = "ml-cache:run-id"
}

variable "role_tag_key" {
  description = "Tag key naming what a resource is to the pipeline; IAM trusts `<key>=builder` (set only at RunInstances) for every call on an instance or volume"
  type        = string
  default     = "ml-cache:role"
}

variable "published_tag_key" {
  description = "Tag key publish adds to an existing snapshot (the only key the policy lets Airflow add after creation)"
  type        = string
  default     = "ml-cache:published"
}

variable "parameter_names" {
  description = "SSM parameters the build DAG reads and writes (snapshot id, metadata), with their leading slash"
  type        = list(string)
}

variable "ssm_document_name" {
  description = "SSM document the build DAG registers and runs on builders"
  type        = string
}

variable "builder_role_arn" {
  description = "IAM role of the builder's instance profile (the only role Airflow may pass)"
  type        = string
}

variable "builder_instance_profile_arn" {
  description = "Instance profile builders must be launched with"
  type        = string
}

variable "vpc_arn" {
  description = "VPC of the builder's network interface"
  type        = string
}

variable "builder_subnet_ids" {
  description = "Private subnets builders may be launched in (aws.subnet_ids of the DAG config)"
  type        = list(string)

  validation {
    condition     = length(var.builder_subnet_ids) > 0
    error_message = "builder_subnet_ids must name at least one private subnet: a builder never runs in the default VPC."
  }
}

variable "builder_security_group_ids" {
  description = "Security groups builders may be launched with (aws.security_group_ids of the DAG config)"
  type        = list(string)
}

variable "builder_instance_types" {
  description = "Instance types builders may be launched as (build.instance_types of the DAG config)"
  type        = list(string)
}

variable "builder_ami_owner_ids" {
  description = "Accounts that own the EKS-optimized AMIs builders boot (the owner of the AMI the public /aws/service/eks/optimized-ami/ parameter names in this region)"
  type        = list(string)
}

variable "cluster_name" {
  description = "EKS cluster the rollout DAG updates"
  type        = string
}

variable "node_group_name" {
  description = "GPU node group the rollout DAG updates"
  type        = string
}

variable "baseline_node_group_name" {
  description = "Uncached baseline node group the rollout DAG scales from 0 to 1 and back (UpdateNodegroupConfig only, never a version update); null = none"
  type        = string
  default     = null
}

variable "launch_template_id" {
  description = "Launch template of the GPU node group (the rollout DAG adds versions to it)"
  type        = string
}

variable "notification_topic_arns" {
  description = "SNS topics the DAGs publish notifications to (config notifications.sns_topic_arn); [] = no SNS statement"
  type        = list(string)
  default     = []
  validation {
    condition     = alltrue([for arn in var.notification_topic_arns : can(regex("^arn:[^:]+:sns:[^:]+:[0-9]{12}:[^:*]+$", arn))])
    error_message = "notification_topic_arns must be SNS topic ARNs, no wildcard."
  }
}

variable "build_log_group_arn" {
  description = "CloudWatch Logs group of the builder's output, read while a command runs (no trailing :*); null = no statement"
  type        = string
  default     = null
  validation {
    condition     = var.build_log_group_arn == null || can(regex("^arn:[^:]+:logs:[^:]+:[0-9]{12}:log-group:[^:*]+$", var.build_log_group_arn))
    error_message = "build_log_group_arn must be one log group's ARN, no wildcard."
  }
}

variable "kms_key_arn" {
  description = "Customer managed KMS key of the builder's volumes and snapshots; null = the default EBS key (no KMS statement)"
  type        = string
  default     = null
}
