variable "endpoint_url" {
  description = "URL of the local cloud (moto server), for example http://127.0.0.1:5000"
  type        = string
}

variable "region" {
  description = "Region the local cloud emulates"
  type        = string
  default     = "us-west-2"
}

variable "name" {
  description = "Pipeline name (resource prefix and `ml-cache:pipeline` tag value)"
  type        = string
  default     = "ml-container-cache"
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

variable "ecr_push_repository_names" {
  description = "Build on push: local ECR repositories whose pushes reach the ecr_push_queue_url queue; [] = off"
  type        = list(string)
  default     = []
}

variable "uncached_baseline" {
  description = "The uncached baseline node group (0 nodes until a rollout scales it to 1)"
  type        = bool
  default     = false
}
