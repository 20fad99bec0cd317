output "statements" {
  description = "Allow statements for the configured sources (the Airflow policy embeds them); empty when nothing is configured"
  value       = local.statements
}

output "builder_json" {
  description = "The builder role's registry policy (IAM JSON): the allow statements plus a Deny of every SSM parameter but the configured ones"
  value = jsonencode({
    Version   = "2012-10-17"
    Statement = local.builder_statements
  })
}
