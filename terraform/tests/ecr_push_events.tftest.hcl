# Build on push (var.ecr_push_events): off by default; when on, the rule matches successful pushes
# to the named repositories only, the queue takes messages from that rule only, and Airflow may
# read and delete on that queue only. Mocked provider: `terraform test` (tests/terraform/test_static.py).

mock_provider "aws" {
  source = "./tests/mocks"
}

override_resource {
  override_during = plan
  target          = module.ecr_push_events[0].aws_cloudwatch_event_rule.push
  values          = { arn = "arn:aws:events:us-west-2:111122223333:rule/ml-container-cache-ecr-push" }
}

override_resource {
  override_during = plan
  target          = module.ecr_push_events[0].aws_sqs_queue.push
  values = {
    arn = "arn:aws:sqs:us-west-2:111122223333:ml-container-cache-ecr-push"
    url = "https://sqs.us-west-2.amazonaws.com/111122223333/ml-container-cache-ecr-push"
  }
}

override_resource {
  override_during = plan
  target          = module.ecr_push_events[0].aws_sqs_queue.dead_letter
  values          = { arn = "arn:aws:sqs:us-west-2:111122223333:ml-container-cache-ecr-push-dlq" }
}

override_resource {
  override_during = plan
  target          = aws_iam_policy.airflow_push
  values          = { arn = "arn:aws:iam::111122223333:policy/ml-container-cache-airflow-push" }
}

override_resource {
  override_during = plan
  target          = aws_iam_role.airflow
  values          = { arn = "arn:aws:iam::111122223333:role/ml-container-cache-airflow-20261204" }
}

run "off_by_default" {
  command = plan

  assert {
    condition     = length(module.ecr_push_events) == 0 && length(aws_iam_policy.airflow_push) == 0
    error_message = "Build on push exists although ecr_push_events is null."
  }

  assert {
    condition     = output.ecr_push_queue_url == null
    error_message = "ecr_push_queue_url is set although build on push is off."
  }
}

run "pushes_of_the_named_repositories_reach_a_queue_only_airflow_reads" {
  command = plan

  variables {
    ecr_push_events      = { repository_names = ["team/vllm", "team/pytorch", "team/vllm"] }
    airflow_pod_identity = { namespace = "airflow", service_account = "airflow-worker" }
  }

  assert {
    condition = jsondecode(module.ecr_push_events[0].rule_pattern) == {
      source        = ["aws.ecr"]
      "detail-type" = ["ECR Image Action"]
      detail        = { "action-type" = ["PUSH"], result = ["SUCCESS"], "repository-name" = ["team/pytorch", "team/vllm"] }
    }
    error_message = "The rule must match successful ECR pushes to exactly the named repositories."
  }

  assert {
    condition     = output.ecr_push_queue_url == "https://sqs.us-west-2.amazonaws.com/111122223333/ml-container-cache-ecr-push"
    error_message = "ecr_push_queue_url must be the queue's URL."
  }

  assert {
    condition = module.ecr_push_events[0].delivery == {
      encrypted                 = { push = true, dead_letter = true }
      message_retention_seconds = 345600
      dead_letter_queue_arn     = "arn:aws:sqs:us-west-2:111122223333:ml-container-cache-ecr-push-dlq"
      queue_dead_letters_to     = "arn:aws:sqs:us-west-2:111122223333:ml-container-cache-ecr-push-dlq"
      target_dead_letters_to    = "arn:aws:sqs:us-west-2:111122223333:ml-container-cache-ecr-push-dlq"
      target_queue_arn          = "arn:aws:sqs:us-west-2:111122223333:ml-container-cache-ecr-push"
    }
    error_message = "Both queues are encrypted; the queue keeps pushes 4 days and dead-letters to the DLQ, as the rule's target does."
  }

  assert {
    condition = alltrue([for queue in ["push", "dead_letter"] : jsondecode(module.ecr_push_events[0].queue_policies[queue]).Statement == [{
      Sid       = "OnlyTheEcrPushRule"
      Effect    = "Allow"
      Principal = { Service = "events.amazonaws.com" }
      Action    = "sqs:SendMessage"
      Resource  = module.ecr_push_events[0].queue_arns[queue]
      Condition = { ArnEquals = { "aws:SourceArn" = "arn:aws:events:us-west-2:111122223333:rule/ml-container-cache-ecr-push" } }
    }]])
    error_message = "Only EventBridge, for this rule (aws:SourceArn), may send to the queues."
  }

  assert {
    condition = jsondecode(aws_iam_policy.airflow_push[0].policy).Statement == [{
      Sid      = "ReadEcrPushQueue"
      Effect   = "Allow"
      Action   = ["sqs:ChangeMessageVisibility", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ReceiveMessage"]
      Resource = "arn:aws:sqs:us-west-2:111122223333:ml-container-cache-ecr-push"
    }]
    error_message = "Airflow may receive, delete, change visibility and read attributes on the push queue only."
  }

  assert {
    condition     = contains(output.airflow_policy_arns, "arn:aws:iam::111122223333:policy/ml-container-cache-airflow-push") && aws_iam_role_policy_attachment.airflow["push"].policy_arn == "arn:aws:iam::111122223333:policy/ml-container-cache-airflow-push"
    error_message = "The push policy is one of airflow_policy_arns and attached to the Pod Identity role."
  }
}

run "an_empty_repository_list_is_refused" {
  command = plan

  variables {
    ecr_push_events = { repository_names = [] }
  }

  expect_failures = [var.ecr_push_events]
}
