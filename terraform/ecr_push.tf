################################################################################
# Optional: build on push (var.ecr_push_events). The rule, the queues and Airflow's right to read
# the queue live in modules/ecr-push-events; Airflow gets that policy as one more managed policy
# (output airflow_policy_arns), so the other policies keep their room under the size limit.
################################################################################

module "ecr_push_events" {
  source = "./modules/ecr-push-events"
  count  = var.ecr_push_events != null ? 1 : 0

  name                      = local.name
  repository_names          = var.ecr_push_events.repository_names
  message_retention_seconds = var.ecr_push_events.message_retention_seconds

  tags = local.tags
}

resource "aws_iam_policy" "airflow_push" {
  count = var.ecr_push_events != null ? 1 : 0

  name        = "${local.name}-airflow-push"
  description = "What the ml_container_cache build DAG's push watcher does: read and delete messages of the ECR push queue"
  policy      = module.ecr_push_events[0].airflow_json

  tags = local.tags
}
