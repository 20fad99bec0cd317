output "queue_url" {
  description = "URL of the queue Airflow reads (set ML_CACHE_PUSH_QUEUE_URL to it)"
  value       = aws_sqs_queue.push.url
}

output "queue_arn" {
  description = "ARN of the queue Airflow reads"
  value       = aws_sqs_queue.push.arn
}

output "dead_letter_queue_url" {
  description = "URL of the dead-letter queue (undeliverable events, messages received too often)"
  value       = aws_sqs_queue.dead_letter.url
}

output "rule_arn" {
  description = "ARN of the EventBridge rule"
  value       = aws_cloudwatch_event_rule.push.arn
}

output "airflow_json" {
  description = "Airflow's policy for the queue (IAM JSON): receive, delete, change visibility, read attributes on that queue only"
  value       = local.airflow_json
}

output "rule_pattern" {
  description = "The rule's event pattern (JSON)"
  value       = aws_cloudwatch_event_rule.push.event_pattern
}

output "queue_policies" {
  description = "The queue policies (JSON) by queue: push, dead_letter"
  value       = local.queue_policies
}

output "queue_arns" {
  description = "The queue ARNs by queue: push, dead_letter"
  value       = local.queue_arns
}

output "delivery" {
  description = "How events are kept: encryption by queue, retention, and where the queue and the rule's target dead-letter"
  value = {
    encrypted                 = { push = aws_sqs_queue.push.sqs_managed_sse_enabled, dead_letter = aws_sqs_queue.dead_letter.sqs_managed_sse_enabled }
    message_retention_seconds = aws_sqs_queue.push.message_retention_seconds
    dead_letter_queue_arn     = aws_sqs_queue.dead_letter.arn
    queue_dead_letters_to     = jsondecode(aws_sqs_queue.push.redrive_policy).deadLetterTargetArn
    target_dead_letters_to    = aws_cloudwatch_event_target.push.dead_letter_config[0].arn
    target_queue_arn          = aws_cloudwatch_event_target.push.arn
  }
}
