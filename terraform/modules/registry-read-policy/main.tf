################################################################################
# Registry read policy: what reaching the configured registries needs, nothing more
#
# Rendered with jsonencode (no provider needed) so tests evaluate the very document attached.
# The builder role gets it inline (pulls); Airflow gets the allow statements as a managed policy of
# their own (resolve_images reads the same credentials). Statements that would have no resource are left out.
################################################################################

locals {
  credentials = values(var.registry_credentials)

  secret_arns = sort(distinct([for c in local.credentials : c.secret_arn if c.source == "secretsmanager"]))
  parameter_arns = sort(distinct([for c in local.credentials :
    "arn:${var.partition}:ssm:${var.region}:${var.account_id}:parameter/${trimprefix(c.parameter_name, "/")}"
    if c.source == "ssm_secure_parameter"
  ]))
  repository_arns = sort(distinct(var.ecr_repository_arns))
  uses_ecr        = contains([for c in local.credentials : c.source], "ecr")

  # KMS decrypts only on behalf of these services: a cross-region secret is decrypted by
  # Secrets Manager in the secret's own region (the 4th field of its ARN).
  via_services = sort(distinct(concat(
    [for arn in local.secret_arns : "secretsmanager.${split(":", arn)[3]}.amazonaws.com"],
    length(local.parameter_arns) > 0 ? ["ssm.${var.region}.amazonaws.com"] : [],
  )))

  # Each candidate statement with whether it has anything to grant; only those that do are rendered.
  candidates = [
    {
      # ecr:GetAuthorizationToken has no resource-level permissions, so "*" is its only form:
      # https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonelasticcontainerregistry.html
      grants = length(local.repository_arns) > 0
      statement = {
        Sid      = "RegistryEcrAuthorizationToken"
        Effect   = "Allow"
        Action   = ["ecr:GetAuthorizationToken"]
        Resource = "*"
      }
    },
    {
      grants = length(local.repository_arns) > 0
      statement = {
        Sid      = "RegistryEcrPullConfiguredRepositories"
        Effect   = "Allow"
        Action   = ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]
        Resource = local.repository_arns
      }
    },
    {
      grants = length(local.secret_arns) > 0
      statement = {
        Sid      = "RegistryReadConfiguredSecrets"
        Effect   = "Allow"
        Action   = ["secretsmanager:GetSecretValue"]
        Resource = local.secret_arns
      }
    },
    {
      grants = length(local.parameter_arns) > 0
      statement = {
        Sid      = "RegistryReadConfiguredParameters"
        Effect   = "Allow"
        Action   = ["ssm:GetParameter"]
        Resource = local.parameter_arns
      }
    },
    {
      grants = length(var.kms_key_arns) > 0 && length(local.via_services) > 0
      statement = {
        Sid       = "RegistryDecryptThroughSecretsManagerAndSsm"
        Effect    = "Allow"
        Action    = ["kms:Decrypt"]
        Resource  = sort(distinct(var.kms_key_arns))
        Condition = { StringEquals = { "kms:ViaService" = local.via_services } }
      }
    },
  ]
  statements = [for candidate in local.candidates : candidate.statement if candidate.grants]

  # The builder reads no parameter but the configured credentials (build_cache_secrets.py). Its other
  # policy (the SSM Agent's, cache.tf) grants no parameter read either; the explicit Deny keeps it so
  # if someone attaches AmazonSSMManagedInstanceCore (every parameter) to the role later.
  parameter_guard = {
    Sid    = "RegistryDenyOtherParameters"
    Effect = "Deny"
    Action = ["ssm:GetParameter", "ssm:GetParameterHistory", "ssm:GetParameters", "ssm:GetParametersByPath"]
  }
  guards = [
    { applies = length(local.parameter_arns) == 0, statement = merge(local.parameter_guard, { Resource = "*" }) },
    { applies = length(local.parameter_arns) > 0, statement = merge(local.parameter_guard, { NotResource = local.parameter_arns }) },
  ]
  builder_statements = concat(local.statements, [for guard in local.guards : guard.statement if guard.applies])

  # Airflow's share is a managed policy of its own, apart from modules/airflow-policy: both fit the size limit.
  airflow_json = length(local.statements) == 0 ? null : jsonencode({ Version = "2012-10-17", Statement = local.statements })
  builder_json = jsonencode({ Version = "2012-10-17", Statement = local.builder_statements })
}

check "ecr_sources_have_repositories" {
  assert {
    condition     = !local.uses_ecr || length(local.repository_arns) > 0
    error_message = "registry_credentials names an ecr source but ecr_repository_arns is empty: neither the builder nor Airflow may read any ECR repository."
  }
}
