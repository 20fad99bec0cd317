output "json" {
  description = "The policy document (IAM JSON) of every DAG call but launching a builder"
  value       = jsonencode(local.policy)

  precondition {
    # https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_iam-quotas.html: a managed policy holds
    # 6,144 characters, white space not counted (jsonencode writes none outside strings).
    condition     = length(jsonencode(local.policy)) <= 6144
    error_message = "The Airflow policy exceeds the 6,144 characters of a managed policy: move statements to a policy of their own."
  }
}

output "launch_json" {
  description = "The policy document (IAM JSON) of launching a builder (RunInstances, iam:PassRole) and of tagging what a run creates"
  value       = jsonencode(local.launch_policy)

  precondition {
    condition     = length(jsonencode(local.launch_policy)) <= 6144
    error_message = "The Airflow launch policy exceeds the 6,144 characters of a managed policy: configure fewer subnets, security groups or instance types."
  }
}

output "actions" {
  description = "Every action the two policies allow, sorted (for review and tests)"
  value       = sort(distinct(flatten([for statement in concat(local.statements, local.launch_statements) : statement.Action])))
}
