################################################################################
# Snapshot parameters: Terraform creates them, the build DAG owns their values
################################################################################

resource "aws_ssm_parameter" "snapshot_id" {
  # checkov:skip=CKV2_AWS_34:A snapshot id is not a secret; String lets EC2, Terraform and the DAGs read it without kms:Decrypt
  name        = local.snapshot_id_parameter_name
  description = "Bare snap- id of the published ML container image cache; '${var.snapshot_id_placeholder}' until the first build. Written by the ml_container_cache_build DAG"
  type        = "String"
  value       = var.snapshot_id_placeholder

  tags = local.tags

  lifecycle {
    ignore_changes = [value, insecure_value, description]
  }
}

resource "aws_ssm_parameter" "snapshot_metadata" {
  # checkov:skip=CKV2_AWS_34:Image references and digests are not secrets (credentials never go here)
  name        = local.snapshot_metadata_parameter_name
  description = "JSON metadata (images, digests, run id, arch) of the published cache. Written by the ml_container_cache_build DAG"
  type        = "String"
  value       = jsonencode({})

  tags = local.tags

  lifecycle {
    ignore_changes = [value, insecure_value, description]
  }
}

locals {
  # The resource's value is refreshed from AWS on every plan (ignore_changes only stops Terraform
  # from writing it), so this follows what the DAG published. A placeholder means "no cache yet".
  snapshot_id_parameter_value = nonsensitive(aws_ssm_parameter.snapshot_id.value)
  cache_snapshot_id           = can(regex("^snap-[0-9a-f]{8,17}$", local.snapshot_id_parameter_value)) ? local.snapshot_id_parameter_value : null

  # A volume restored from a snapshot cannot be smaller than it: follow a larger build.
  cache_volume_size_gib = max(var.cache_volume_size_gib, one(data.aws_ebs_snapshot.cache[*].volume_size) == null ? 0 : one(data.aws_ebs_snapshot.cache[*].volume_size))
}

data "aws_ebs_snapshot" "cache" {
  count = local.cache_snapshot_id == null ? 0 : 1

  snapshot_ids = [local.cache_snapshot_id]
}

################################################################################
# Builder: instance role and profile, security group without ingress
################################################################################

data "aws_iam_policy_document" "builder_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.${local.dns_suffix}"]
    }
  }
}

resource "aws_iam_role" "builder" {
  name               = local.builder_name
  description        = "Cache builder instances: the SSM Agent for Run Command and pulls from the configured registries, nothing else"
  assume_role_policy = data.aws_iam_policy_document.builder_assume.json

  tags = local.tags
}

# What the SSM Agent needs to register and run Run Command documents, and nothing else: no
# AmazonSSMManagedInstanceCore, which reads every SSM parameter (SecureStrings included) and is
# too much for an instance that unpacks untrusted images as root. Register and report health
# (ssm:UpdateInstanceInformation); receive commands and send results over the message channels
# (ec2messages:*, and ssmmessages' control channel that current agents prefer). No data channel
# (Session Manager), associations, inventory or patching. The actions and their lack of resource
# scope: https://docs.aws.amazon.com/systems-manager/latest/userguide/setup-create-iam-instance-profile.html
# and the Service Authorization Reference (list_awssystemsmanager.html, list_amazonec2messages.html,
# list_amazonsessionmanagermessagegatewayservice.html).
data "aws_iam_policy_document" "builder_agent" {
  # checkov:skip=CKV_AWS_111:None of these actions has resource-level permissions (Service Authorization Reference)
  # checkov:skip=CKV_AWS_356:None of these actions has resource-level permissions (Service Authorization Reference)
  statement {
    sid = "RunCommandAgent"
    actions = [
      "ec2messages:AcknowledgeMessage",
      "ec2messages:DeleteMessage",
      "ec2messages:FailMessage",
      "ec2messages:GetEndpoint",
      "ec2messages:GetMessages",
      "ec2messages:SendReply",
      "ssm:UpdateInstanceInformation",
      "ssmmessages:CreateControlChannel",
      "ssmmessages:OpenControlChannel",
    ]
    resources = ["*"]
  }
}

resource "aws_iam_role_policy" "builder_agent" {
  name   = "ssm-agent"
  role   = aws_iam_role.builder.id
  policy = data.aws_iam_policy_document.builder_agent.json
}

# Registry access for the configured sources only (Airflow gets the same reads, airflow_iam.tf):
# no AmazonEC2ContainerRegistryReadOnly, which reads every repository the account can see.
module "registry_read_policy" {
  source = "./modules/registry-read-policy"

  partition            = local.partition
  region               = local.region
  account_id           = local.account_id
  registry_credentials = var.registry_credentials
  ecr_repository_arns  = var.ecr_repository_arns
  kms_key_arns         = var.registry_kms_key_arns
}

resource "aws_iam_role_policy" "builder_registry_read" {
  name   = "registry-read"
  role   = aws_iam_role.builder.id
  policy = module.registry_read_policy.builder_json
}

# The builder's output, streamed by the SSM agent while a command runs (SendCommand's
# CloudWatchOutputConfig; the DAG's trigger reads its progress from here). The agent calls
# CreateLogGroup first (an existing group answers ResourceAlreadyExists, which it accepts), then
# CreateLogStream and PutLogEvents: amazon-ssm-agent, agent/framework/processor/executer/iohandler and
# agent/agentlogstocloudwatch/cloudwatchlogspublisher. Exactly this group, nothing else of CloudWatch Logs.
resource "aws_cloudwatch_log_group" "build" {
  # checkov:skip=CKV_AWS_338:Build output is for watching and debugging a run, not an audit trail: build_log_retention_days (30) suffices
  name              = local.build_log_group_name
  retention_in_days = var.build_log_retention_days
  kms_key_id        = var.kms_key_arn # as the control plane's group (eks.tf)

  tags = local.tags
}

data "aws_iam_policy_document" "builder_output" {
  statement {
    sid     = "StreamCommandOutput"
    actions = ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:DescribeLogStreams", "logs:PutLogEvents"]
    resources = [
      aws_cloudwatch_log_group.build.arn,
      "${aws_cloudwatch_log_group.build.arn}:log-stream:*",
    ]
  }
}

resource "aws_iam_role_policy" "builder_output" {
  name   = "command-output"
  role   = aws_iam_role.builder.id
  policy = data.aws_iam_policy_document.builder_output.json
}

resource "aws_iam_instance_profile" "builder" {
  name = local.builder_name
  role = aws_iam_role.builder.name

  tags = local.tags
}

resource "aws_security_group" "builder" {
  # checkov:skip=CKV2_AWS_5:Attached at run time to the builder instances the build DAG launches (aws.security_group_ids)
  name_prefix = "${local.builder_name}-"
  description = "Cache builder: no ingress (managed through SSM), egress to registries and AWS APIs"
  vpc_id      = aws_vpc.this.id

  tags = merge(local.tags, { Name = local.builder_name })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_egress_rule" "builder_https" {
  security_group_id = aws_security_group.builder.id
  description       = "HTTPS to registries, SSM and EC2 APIs"
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
}

resource "aws_vpc_security_group_egress_rule" "builder_dns" {
  for_each = toset(["udp", "tcp"])

  security_group_id = aws_security_group.builder.id
  description       = "DNS to the VPC resolver"
  cidr_ipv4         = "${cidrhost(var.vpc_cidr, 2)}/32"
  ip_protocol       = each.value
  from_port         = 53
  to_port           = 53
}
