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
  description = "Registry host or host pattern -> credential source, the DAGs' aws.registry_credentials (builder spec schema, $defs/credential)"
  type = map(object({
    source         = string
    secret_arn     = optional(string)
    parameter_name = optional(string)
  }))
  default = {}

  validation {
    # The builder spec schema's $defs/registry_host_pattern: `*` stands for one DNS label or part of one.
    condition = alltrue([for host in keys(var.registry_credentials) :
    can(regex("^([a-zA-Z0-9*]|[a-zA-Z0-9*][a-zA-Z0-9*-]*[a-zA-Z0-9*])([.]([a-zA-Z0-9*]|[a-zA-Z0-9*][a-zA-Z0-9*-]*[a-zA-Z0-9*]))*(:[0-9]{1,5})?$", host))])
    error_message = "registry_credentials keys must be registry hosts[:port] or host patterns such as *.dkr.ecr.*.amazonaws.com."
  }

  validation {
    condition     = alltrue([for credential in values(var.registry_credentials) : contains(["ecr", "secretsmanager", "ssm_secure_parameter", "anonymous"], credential.source)])
    error_message = "registry_credentials: source must be one of ecr, secretsmanager, ssm_secure_parameter, anonymous."
  }

  validation {
    condition = alltrue([for credential in values(var.registry_credentials) :
      credential.source != "secretsmanager" || (credential.parameter_name == null &&
    can(regex("^arn:aws[a-z-]*:secretsmanager:[a-z]{2}(-[a-z]+)+-[0-9]+:[0-9]{12}:secret:[A-Za-z0-9/_+=.@-]{1,512}$", coalesce(credential.secret_arn, "-"))))])
    error_message = "registry_credentials: a secretsmanager source takes exactly secret_arn, the secret's full ARN (arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME-SUFFIX, no wildcard)."
  }

  validation {
    condition = alltrue([for credential in values(var.registry_credentials) :
      credential.source != "ssm_secure_parameter" || (credential.secret_arn == null &&
        # RE2 repeats stop at 1000: the schema's {1,1011} is a length check here.
    can(regex("^/?[A-Za-z0-9_./-]+$", coalesce(credential.parameter_name, "*"))) && try(length(trimprefix(credential.parameter_name, "/")) <= 1011, false))])
    error_message = "registry_credentials: an ssm_secure_parameter source takes exactly parameter_name, the SecureString parameter's name (no wildcard)."
  }

  validation {
    condition = alltrue([for credential in values(var.registry_credentials) :
    !contains(["ecr", "anonymous"], credential.source) || (credential.secret_arn == null && credential.parameter_name == null)])
    error_message = "registry_credentials: ecr and anonymous sources take no secret_arn or parameter_name."
  }
}

variable "ecr_repository_arns" {
  description = "Full ARNs of the ECR repositories images come from, in any account and region (the repository policy of another account must also grant the builder and Airflow roles)"
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for arn in var.ecr_repository_arns : !can(regex("[*?]", try(split(":repository/", arn)[1], arn)))])
    error_message = "ecr_repository_arns: a wildcard (* or ?) in the repository part would grant repositories nobody configured; list each repository's full ARN."
  }

  validation {
    condition = alltrue([for arn in var.ecr_repository_arns :
    can(regex("^arn:aws[a-z-]*:ecr:[a-z]{2}(-[a-z]+)+-[0-9]+:[0-9]{12}:repository/([a-z0-9]+([._-][a-z0-9]+)*/)*[a-z0-9]+([._-][a-z0-9]+)*$", arn))])
    error_message = "ecr_repository_arns must be full repository ARNs: arn:aws:ecr:REGION:ACCOUNT:repository/NAME."
  }
}

variable "kms_key_arns" {
  description = "Customer managed KMS keys that encrypt the configured secrets and SecureString parameters; empty = the AWS managed keys (aws/secretsmanager, aws/ssm), whose key policies already allow use through those services"
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for arn in var.kms_key_arns : can(regex("^arn:aws[a-z-]*:kms:[a-z]{2}(-[a-z]+)+-[0-9]+:[0-9]{12}:key/(mrk-)?[0-9a-f-]+$", arn))])
    error_message = "kms_key_arns must be key ARNs (arn:aws:kms:REGION:ACCOUNT:key/ID); aliases do not authorize kms:Decrypt."
  }
}
