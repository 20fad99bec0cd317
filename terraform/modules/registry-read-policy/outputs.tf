# https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_iam-quotas.html: white space is not counted,
# and jsonencode writes none outside strings, so the length of the rendered document is what AWS counts.

output "json" {
  description = "Airflow's registry policy (IAM JSON): the allow statements for the configured sources; null when nothing is configured"
  value       = local.airflow_json

  precondition {
    condition     = length(coalesce(local.airflow_json, "{}")) <= 6144
    error_message = "The registry policy exceeds the 6,144 characters of a managed policy: configure fewer secrets, parameters, repositories or keys."
  }
}

output "builder_json" {
  description = "The builder role's registry policy (IAM JSON): the allow statements plus a Deny of every SSM parameter but the configured ones"
  value       = local.builder_json

  precondition {
    # A role's inline policies hold 10,240 characters together; this is the builder's only one.
    condition     = length(local.builder_json) <= 10240
    error_message = "The builder's registry policy exceeds the 10,240 characters of a role's inline policies: configure fewer secrets, parameters, repositories or keys."
  }
}
