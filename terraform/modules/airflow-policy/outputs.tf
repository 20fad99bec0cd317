output "json" {
  description = "The policy document (IAM JSON)"
  value       = jsonencode(local.policy)
}

output "actions" {
  description = "Every action the policy allows, sorted (for review and tests)"
  value       = sort(distinct(flatten([for statement in local.statements : statement.Action])))
}
