################################################################################
# Airflow worker policy: exactly the calls the ml_container_cache DAGs make
#
# Rendered with jsonencode (no provider needed), so tests can evaluate the very document
# Terraform attaches. Scoping: creation calls require our tags in the request, named resources
# are ARNs. Calls on instances and volumes (terminate, delete, Run Command, snapshot) require
# `ml-cache:role=builder` on the resource, never only the pipeline tag: Terraform puts the pipeline
# tag on every EKS node, and no node template may carry the role tag (variables.tf refuses
# `ml-cache:` keys in var.tags). Only RunInstances sets it, through request-tag conditions.
# The janitor (dags/ml_container_cache_janitor.py) deletes only what carries our tags or is our
# document, and reads every node group of our cluster to learn which snapshots run.
# The registry reads resolve_images needs are a policy of their own (modules/registry-read-policy,
# output `json`): together they would exceed the managed policy size (outputs.tf).
################################################################################

locals {
  arn_prefix  = "arn:${var.partition}"
  ec2_account = "${local.arn_prefix}:ec2:${var.region}:${var.account_id}"
  ec2_public  = "${local.arn_prefix}:ec2:${var.region}:"
  ssm_account = "${local.arn_prefix}:ssm:${var.region}:${var.account_id}"
  eks_account = "${local.arn_prefix}:eks:${var.region}:${var.account_id}"

  instance_arns    = "${local.ec2_account}:instance/*"
  volume_arns      = "${local.ec2_account}:volume/*"
  snapshot_arns    = "${local.ec2_public}:snapshot/*"
  parameter_arns   = [for name in var.parameter_names : "${local.ssm_account}:parameter${name}"]
  document_arn     = "${local.ssm_account}:document/${var.ssm_document_name}"
  cluster_arn      = "${local.eks_account}:cluster/${var.cluster_name}"
  node_group_arns  = "${local.eks_account}:nodegroup/${var.cluster_name}/${var.node_group_name}/*"
  cluster_groups   = "${local.eks_account}:nodegroup/${var.cluster_name}/*/*"
  launch_template  = "${local.ec2_account}:launch-template/${var.launch_template_id}"
  subnet_arns      = [for id in var.builder_subnet_ids : "${local.ec2_account}:subnet/${id}"]
  group_arns       = [for id in var.builder_security_group_ids : "${local.ec2_account}:security-group/${id}"]
  request_pipeline = "aws:RequestTag/${var.pipeline_tag_key}"
  request_run_id   = "aws:RequestTag/${var.run_id_tag_key}"
  request_role     = "aws:RequestTag/${var.role_tag_key}"
  tagged_pipeline  = "aws:ResourceTag/${var.pipeline_tag_key}"
  tagged_role      = "aws:ResourceTag/${var.role_tag_key}"
  # What RunInstances must put on the builder instance and its volumes (and only RunInstances can).
  builder_request = {
    (local.request_pipeline) = var.pipeline
    (local.request_role)     = "builder"
  }
  # A builder of this pipeline: both tags on the resource.
  builder_resource = {
    (local.tagged_pipeline) = var.pipeline
    (local.tagged_role)     = "builder"
  }

  statements = concat([
    {
      # No resource-level scope exists for these (Service Authorization Reference, list_amazonec2.html and
      # list_awssystemsmanager.html): GetCommandInvocation and ListCommandInvocations take only "*", so Run
      # Command output of any document is readable (the builder prints no secret). CancelCommand, "*" only
      # too, is left out: it would reach any command on any instance, and no DAG cancels (a builder whose
      # command overruns is terminated).
      Sid    = "DescribeWithoutResourceScope"
      Effect = "Allow"
      Action = [
        "ec2:DescribeAvailabilityZones",
        "ec2:DescribeFastSnapshotRestores",
        "ec2:DescribeInstanceStatus",
        "ec2:DescribeInstanceTypeOfferings",
        "ec2:DescribeInstanceTypes",
        "ec2:DescribeInstances",
        "ec2:DescribeLaunchTemplateVersions",
        "ec2:DescribeLaunchTemplates",
        "ec2:DescribeSnapshots",
        "ec2:DescribeVolumes",
        "ssm:DescribeInstanceInformation",
        "ssm:GetCommandInvocation",
        "ssm:ListCommandInvocations",
      ]
      Resource = "*"
    },
    {
      Sid    = "ReadSnapshotAndAmiParameters"
      Effect = "Allow"
      Action = ["ssm:GetParameter"]
      Resource = concat(local.parameter_arns, [
        "${local.arn_prefix}:ssm:${var.region}::parameter/aws/service/eks/optimized-ami/*",
      ])
    },
    {
      # History: the janitor never deletes a snapshot that a recent value of the parameter held.
      Sid      = "PublishSnapshotParameters"
      Effect   = "Allow"
      Action   = ["ssm:GetParameterHistory", "ssm:PutParameter"]
      Resource = local.parameter_arns
    },
    {
      # The janitor prunes old versions. IAM cannot tell a version from the whole document (DeleteDocument
      # without DocumentVersion deletes them all): the janitor always names one, and a build re-creates it.
      Sid    = "RegisterBuildDocument"
      Effect = "Allow"
      Action = [
        "ssm:CreateDocument",
        "ssm:DeleteDocument",
        "ssm:DescribeDocument",
        "ssm:GetDocument",
        "ssm:ListDocumentVersions",
        "ssm:SendCommand",
        "ssm:UpdateDocument",
        "ssm:UpdateDocumentDefaultVersion",
      ]
      Resource = local.document_arn
    },
    {
      Sid      = "SendCommandToBuilders"
      Effect   = "Allow"
      Action   = ["ssm:SendCommand"]
      Resource = local.instance_arns
      Condition = {
        StringEquals = {
          "ssm:resourceTag/${var.pipeline_tag_key}" = var.pipeline
          "ssm:resourceTag/${var.role_tag_key}"     = "builder"
        }
      }
    },
    {
      Sid       = "SnapshotBuilderVolumes"
      Effect    = "Allow"
      Action    = ["ec2:CreateSnapshot"]
      Resource  = local.volume_arns
      Condition = { StringEquals = local.builder_resource }
    },
    {
      Sid      = "CreateTaggedSnapshots"
      Effect   = "Allow"
      Action   = ["ec2:CreateSnapshot"]
      Resource = local.snapshot_arns
      Condition = {
        StringEquals = { (local.request_pipeline) = var.pipeline }
        Null         = { (local.request_run_id) = "false" }
      }
    },
    {
      # The teardown and the janitor terminate builders and delete their orphaned volumes.
      Sid       = "RemoveBuilders"
      Effect    = "Allow"
      Action    = ["ec2:DeleteVolume", "ec2:TerminateInstances"]
      Resource  = [local.instance_arns, local.volume_arns]
      Condition = { StringEquals = local.builder_resource }
    },
    {
      # Snapshots only (nodes are no snapshots): the EBS direct APIs (block lists only, never data) give
      # the cost report's full and incremental snapshot sizes.
      Sid    = "ManagePipelineSnapshots"
      Effect = "Allow"
      Action = [
        "ebs:ListChangedBlocks",
        "ebs:ListSnapshotBlocks",
        "ec2:DeleteSnapshot",
        "ec2:DisableFastSnapshotRestores",
        "ec2:EnableFastSnapshotRestores",
      ]
      Resource  = local.snapshot_arns
      Condition = { StringEquals = { (local.tagged_pipeline) = var.pipeline } }
    },
    {
      # Publish marks the snapshot; no other key may be added or overwritten on an existing snapshot.
      Sid      = "MarkSnapshotPublished"
      Effect   = "Allow"
      Action   = ["ec2:CreateTags"]
      Resource = local.snapshot_arns
      Condition = {
        StringEquals                = { (local.tagged_pipeline) = var.pipeline }
        "ForAllValues:StringEquals" = { "aws:TagKeys" = [var.published_tag_key] }
        Null                        = { "aws:TagKeys" = "false" }
      }
    },
    {
      Sid      = "AddGpuLaunchTemplateVersions"
      Effect   = "Allow"
      Action   = ["ec2:CreateLaunchTemplateVersion"]
      Resource = local.launch_template
    },
    {
      Sid      = "ReadCluster"
      Effect   = "Allow"
      Action   = ["eks:DescribeCluster", "eks:DescribeUpdate", "eks:ListNodegroups", "eks:ListUpdates"]
      Resource = local.cluster_arn
    },
    {
      Sid      = "UpdateGpuNodeGroup"
      Effect   = "Allow"
      Action   = ["eks:UpdateNodegroupConfig", "eks:UpdateNodegroupVersion"]
      Resource = local.node_group_arns
    },
    {
      # The janitor keeps every snapshot a node group of the cluster runs or is being updated to.
      Sid      = "ReadClusterNodeGroups"
      Effect   = "Allow"
      Action   = ["eks:DescribeNodegroup", "eks:DescribeUpdate", "eks:ListUpdates"]
      Resource = local.cluster_groups
    },
    ], var.baseline_node_group_name == null ? [] : [
    {
      # Scaling only: the baseline runs Terraform's template, no rollout updates its version. Describe
      # calls on it are in ReadClusterNodeGroups.
      Sid      = "ScaleBaselineNodeGroup"
      Effect   = "Allow"
      Action   = ["eks:UpdateNodegroupConfig"]
      Resource = "${local.eks_account}:nodegroup/${var.cluster_name}/${var.baseline_node_group_name}/*"
    },
    ], var.kms_key_arn == null ? [] : [
    {
      Sid    = "UseCacheKmsKeyThroughEbs"
      Effect = "Allow"
      Action = [
        "kms:CreateGrant",
        "kms:Decrypt",
        "kms:DescribeKey",
        "kms:GenerateDataKeyWithoutPlaintext",
        "kms:ReEncryptFrom",
        "kms:ReEncryptTo",
      ]
      Resource = var.kms_key_arn
      Condition = {
        StringEquals = { "kms:ViaService" = "ec2.${var.region}.amazonaws.com" }
      }
    },
  ])

  # Launching a builder is a policy of its own: with it the DAG calls would exceed the 6,144
  # characters of one managed policy (outputs.tf).
  launch_statements = concat([
    {
      Sid      = "RunBuilderInstance"
      Effect   = "Allow"
      Action   = ["ec2:RunInstances"]
      Resource = local.instance_arns
      Condition = {
        StringEquals = merge(local.builder_request, {
          "ec2:MetadataHttpTokens" = "required"
          "ec2:InstanceType"       = var.builder_instance_types
        })
        ArnEquals = { "ec2:InstanceProfile" = var.builder_instance_profile_arn }
        Null      = { (local.request_run_id) = "false" }
      }
    },
    {
      Sid       = "RunBuilderVolumes"
      Effect    = "Allow"
      Action    = ["ec2:RunInstances"]
      Resource  = local.volume_arns
      Condition = { StringEquals = local.builder_request, Null = { (local.request_run_id) = "false" } }
    },
    {
      Sid      = "RunBuilderPrivateInterface"
      Effect   = "Allow"
      Action   = ["ec2:RunInstances"]
      Resource = "${local.ec2_account}:network-interface/*"
      Condition = {
        ArnEquals = { "ec2:Vpc" = var.vpc_arn }
        Bool      = { "ec2:AssociatePublicIpAddress" = "false" }
      }
    },
    {
      Sid      = "RunBuilderInItsSubnetsAndGroups"
      Effect   = "Allow"
      Action   = ["ec2:RunInstances"]
      Resource = concat(local.subnet_arns, local.group_arns)
    },
    {
      # EKS-optimized AMIs (and the snapshots behind them) belong to the EKS AMI account, not to the
      # `amazon` alias; a base snapshot of an incremental build is ours.
      Sid      = "RunBuilderFromEksImages"
      Effect   = "Allow"
      Action   = ["ec2:RunInstances"]
      Resource = ["${local.ec2_public}:image/*", local.snapshot_arns]
      Condition = {
        StringEquals = { "ec2:Owner" = concat(var.builder_ami_owner_ids, [var.account_id]) }
      }
    },
    {
      Sid      = "TagOnlyWhileCreating"
      Effect   = "Allow"
      Action   = ["ec2:CreateTags"]
      Resource = [local.instance_arns, local.volume_arns, local.snapshot_arns]
      Condition = {
        StringEquals = {
          "ec2:CreateAction"       = ["RunInstances", "CreateSnapshot"]
          (local.request_pipeline) = var.pipeline
        }
      }
    },
    {
      Sid      = "PassOnlyTheBuilderRole"
      Effect   = "Allow"
      Action   = ["iam:PassRole"]
      Resource = var.builder_role_arn
      Condition = {
        StringEquals = { "iam:PassedToService" = "ec2.amazonaws.com" }
      }
    }
    ], var.build_log_group_arn == null ? [] : [
    {
      # ml_cache.triggers.builder_command logs the builder's progress from its output stream.
      Sid      = "ReadBuilderOutput"
      Effect   = "Allow"
      Action   = ["logs:FilterLogEvents", "logs:GetLogEvents"]
      Resource = [var.build_log_group_arn, "${var.build_log_group_arn}:log-stream:*"]
    }
    ], length(var.notification_topic_arns) == 0 ? [] : [
    {
      # ml_cache.notify publishes a run's failure (and, if asked, success) to these topics only.
      Sid      = "PublishNotifications"
      Effect   = "Allow"
      Action   = ["sns:Publish"]
      Resource = var.notification_topic_arns
    }
  ])

  policy        = { Version = "2012-10-17", Statement = local.statements }
  launch_policy = { Version = "2012-10-17", Statement = local.launch_statements }
}
