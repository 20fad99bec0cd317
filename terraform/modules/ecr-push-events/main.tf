################################################################################
# Build on push: ECR's "ECR Image Action" events (successful pushes to the named repositories)
# -> an EventBridge rule on the default bus -> an SQS queue Airflow's triggerer reads
# (ml_cache.triggers.ecr_push: one Asset event per burst of pushes).
# Event shape: https://docs.aws.amazon.com/AmazonECR/latest/userguide/ecr-eventbridge.html
# The queue accepts messages from this rule only (events.amazonaws.com with aws:SourceArn):
# https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-use-resource-based.html#eb-sqs-permissions
################################################################################

locals {
  event_pattern = {
    source        = ["aws.ecr"]
    "detail-type" = ["ECR Image Action"]
    detail = {
      "action-type"     = ["PUSH"]
      result            = ["SUCCESS"]
      "repository-name" = sort(distinct(var.repository_names))
    }
  }
}

resource "aws_cloudwatch_event_rule" "push" {
  name          = "${var.name}-ecr-push"
  description   = "Successful pushes to the ECR repositories of ${var.name}: start a cache build"
  event_pattern = jsonencode(local.event_pattern)

  tags = var.tags
}

# Dead letters of both kinds: messages the triggerer received max_receive_count times without
# deleting them, and events EventBridge could not deliver to the queue (the target's DLQ).
resource "aws_sqs_queue" "dead_letter" {
  name                      = "${var.name}-ecr-push-dlq"
  message_retention_seconds = 1209600 # the SQS maximum, 14 days, to look at what went wrong
  sqs_managed_sse_enabled   = true

  tags = var.tags
}

resource "aws_sqs_queue" "push" {
  name                       = "${var.name}-ecr-push"
  message_retention_seconds  = var.message_retention_seconds
  visibility_timeout_seconds = var.visibility_timeout_seconds
  receive_wait_time_seconds  = 20 # long polling: an idle queue costs three requests a minute
  # SSE with SQS-owned keys: EventBridge can send without a key policy grant, which a
  # customer-managed key would need (kms:GenerateDataKey/Decrypt for events.amazonaws.com).
  sqs_managed_sse_enabled = true

  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.dead_letter.arn
    maxReceiveCount     = var.max_receive_count
  })

  tags = var.tags
}

# jsonencode, not a policy document data source: tests read the very policies attached.
locals {
  queue_arns = { push = aws_sqs_queue.push.arn, dead_letter = aws_sqs_queue.dead_letter.arn }
  queue_policies = { for queue, arn in local.queue_arns : queue => jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid       = "OnlyTheEcrPushRule"
      Effect    = "Allow"
      Principal = { Service = "events.amazonaws.com" }
      Action    = "sqs:SendMessage"
      Resource  = arn
      Condition = { ArnEquals = { "aws:SourceArn" = aws_cloudwatch_event_rule.push.arn } }
    }]
  }) }
}

resource "aws_sqs_queue_policy" "push" {
  queue_url = aws_sqs_queue.push.id
  policy    = local.queue_policies["push"]
}

resource "aws_sqs_queue_policy" "dead_letter" {
  queue_url = aws_sqs_queue.dead_letter.id
  policy    = local.queue_policies["dead_letter"]
}

resource "aws_cloudwatch_event_target" "push" {
  rule      = aws_cloudwatch_event_rule.push.name
  target_id = "airflow-queue"
  arn       = aws_sqs_queue.push.arn

  dead_letter_config {
    arn = aws_sqs_queue.dead_letter.arn
  }

  retry_policy {
    maximum_event_age_in_seconds = 86400
    maximum_retry_attempts       = 185
  }
}

# What Airflow's triggerer does with the queue, on that queue only (jsonencode: tests read the
# very document attached, without a provider).
locals {
  airflow_json = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid    = "ReadEcrPushQueue"
      Effect = "Allow"
      Action = [
        "sqs:ChangeMessageVisibility",
        "sqs:DeleteMessage",
        "sqs:GetQueueAttributes",
        "sqs:ReceiveMessage",
      ]
      Resource = aws_sqs_queue.push.arn
    }]
  })
}
