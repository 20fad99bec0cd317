output "json" {
  description = "The policy document (IAM JSON)"
  value       = jsonencode(local.policy)

  precondition {
    # https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_iam-quotas.html: a managed policy holds
    # 6,144 characters, white space not counted (jsonencode writes none outside strings).
    condition     = length(jsonencode(local.policy)) <= 6144
    error_message = "The Airflow policy exceeds the 6,144 characters of a managed policy: move statements to a policy of their own."
  }
}

output "actions" {
  description = "Every action the policy allows, sorted (for review and tests)"
  value       = sort(distinct(flatten([for statement in local.statements : statement.Action])))
}
