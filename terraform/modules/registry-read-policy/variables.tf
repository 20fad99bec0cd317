variable "partition" {
  description = "AWS partition of the ARNs (aws, aws-cn, aws-us-gov)"
  type        = string
}

variable "region" {
  description = "Region the pipeline runs in: SSM SecureString credentials are read there"
  type        = string
}

variable "account_id" {
  description = "Account that owns the SSM SecureString credentials"
  type        = string
}

variable "registry_credentials" {
  description = "Registry host or host pattern -> credential source, the DAGs' aws.registry_credentials (builder spec schema, $defs/credential); validated by the root module's variable"
  type = map(object({
    source         = string
    secret_arn     = optional(string)
    parameter_name = optional(string)
  }))
  default = {}
}

variable "ecr_repository_arns" {
  description = "Full ARNs of the ECR repositories images come from, in any account and region (the repository policy of another account must also grant the builder and Airflow roles); validated by the root module's variable"
  type        = list(string)
  default     = []
}

variable "kms_key_arns" {
  description = "Customer managed KMS keys that encrypt the configured secrets and SecureString parameters; empty = the AWS managed keys (aws/secretsmanager, aws/ssm), whose key policies already allow use through those services"
  type        = list(string)
  default     = []
}
