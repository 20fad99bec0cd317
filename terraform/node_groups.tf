################################################################################
# Node IAM role (shared by both node groups)
################################################################################

data "aws_iam_policy_document" "node_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.${local.dns_suffix}"]
    }
  }
}

resource "aws_iam_role" "node" {
  name_prefix        = "${local.name}-node-"
  assume_role_policy = data.aws_iam_policy_document.node_assume.json

  tags = local.tags
}

# No AmazonSSMManagedInstanceCore: nodes are no Run Command targets (only builders are), and it would
# let any pod reaching the node role read every SSM parameter. AmazonEKS_CNI_Policy only when this
# configuration manages no add-ons: the vpc-cni add-on's aws-node gets it through EKS Pod Identity
# (eks.tf), so other pods on the node cannot use it.
resource "aws_iam_role_policy_attachment" "node" {
  for_each = toset(concat(
    ["AmazonEKSWorkerNodePolicy", "AmazonEC2ContainerRegistryReadOnly"],
    # Without the managed vpc-cni add-on, EKS's self-managed aws-node runs with the node role.
    var.enable_cluster_addons ? [] : ["AmazonEKS_CNI_Policy"],
  ))

  role       = aws_iam_role.node.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/${each.value}"
}

################################################################################
# GPU node group: boots with the image cache mounted at /var/lib/containerd
################################################################################

locals {
  cache_device_name = "/dev/xvdb"
  gpu_ami_type      = "AL2023_x86_64_NVIDIA"

  # nodeadm (AL2023) reads MIME multi-part user data; EKS merges its own NodeConfig part in.
  # cloud-init runs the script part before nodeadm-run starts containerd and kubelet.
  gpu_user_data = join("\r\n", [
    "MIME-Version: 1.0",
    "Content-Type: multipart/mixed; boundary=\"==MLCACHE==\"",
    "",
    "--==MLCACHE==",
    "Content-Type: text/x-shellscript; charset=\"us-ascii\"",
    "",
    file("${path.module}/templates/mount-containerd-cache.sh"),
    "--==MLCACHE==--",
    "",
  ])

  gpu_node_labels = merge(var.gpu_node_labels, {
    "ml-cache/enabled"       = "true"
    "nvidia.com/gpu.present" = "true"
  })
}

# The GPU template and, with var.uncached_baseline, its twin for the baseline group: one definition,
# the baseline's cache volume blank (no snapshot_id: the mount script formats it). The key "gpu"
# keeps the existing template (moved below), so turning the baseline on or off never touches it.
locals {
  gpu_launch_templates = merge({
    gpu = {
      name        = "${local.name}-gpu"
      description = "GPU nodes of ${local.name}. Terraform owns this template's content and default version; the rollout DAG adds versions and owns which one the node group runs"
      snapshot_id = local.cache_snapshot_id
    }
    }, var.uncached_baseline ? {
    gpu_baseline = {
      name        = "${local.name}-gpu-baseline"
      description = "Uncached baseline GPU node of ${local.name}: the GPU template with a blank cache volume, for the rollout's cold-pull timings"
      snapshot_id = null
    }
  } : {})
}

# Deployments from before the baseline had the GPU template at the bare address.
moved {
  from = aws_launch_template.gpu
  to   = aws_launch_template.gpu["gpu"]
}

resource "aws_launch_template" "gpu" {
  for_each = local.gpu_launch_templates

  name        = each.value.name
  description = each.value.description

  # Terraform's latest content (including the published snapshot) is what the rollout DAG copies.
  update_default_version = true

  ebs_optimized = true
  user_data     = base64encode(local.gpu_user_data)

  block_device_mappings {
    device_name = "/dev/xvda"

    ebs {
      volume_size           = var.gpu_root_volume_size_gib
      volume_type           = "gp3"
      encrypted             = true
      kms_key_id            = var.kms_key_arn
      delete_on_termination = true
    }
  }

  block_device_mappings {
    device_name = local.cache_device_name

    ebs {
      # null until the build DAG publishes a snapshot (and always for the baseline): the node then
      # formats a blank volume.
      snapshot_id           = each.value.snapshot_id
      volume_size           = local.cache_volume_size_gib
      volume_type           = "gp3"
      iops                  = var.cache_volume_iops
      throughput            = var.cache_volume_throughput_mibps
      encrypted             = true
      kms_key_id            = var.kms_key_arn
      delete_on_termination = true
    }
  }

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  monitoring {
    enabled = true
  }

  tag_specifications {
    resource_type = "instance"
    tags          = merge(local.tags, { Name = each.value.name })
  }

  tag_specifications {
    resource_type = "volume"
    tags          = merge(local.tags, { Name = each.value.name })
  }

  tags = local.tags

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_eks_node_group" "gpu" {
  cluster_name    = aws_eks_cluster.this.name
  node_group_name = "${local.name}-gpu"
  node_role_arn   = aws_iam_role.node.arn
  subnet_ids      = aws_subnet.private[*].id

  ami_type       = local.gpu_ami_type
  capacity_type  = var.gpu_capacity_type
  instance_types = var.gpu_instance_types

  scaling_config {
    min_size     = var.gpu_min_size
    max_size     = var.gpu_max_size
    desired_size = var.gpu_desired_size
  }

  update_config {
    max_unavailable = 1
  }

  launch_template {
    id      = aws_launch_template.gpu["gpu"].id
    version = aws_launch_template.gpu["gpu"].default_version
  }

  labels = local.gpu_node_labels

  taint {
    key    = "nvidia.com/gpu"
    value  = "true"
    effect = "NO_SCHEDULE"
  }

  tags = local.tags

  lifecycle {
    # The rollout DAG owns the running version (UpdateNodegroupVersion) and autoscalers own the
    # size: a later apply must not roll nodes back to an older template version.
    # remote_access is never set (it cannot be combined with a launch template); moto 5.2.5
    # reports a default one, which would otherwise force a replacement in the local cloud.
    ignore_changes = [
      launch_template[0].version,
      scaling_config[0].desired_size,
      remote_access,
    ]
  }

  depends_on = [
    aws_iam_role_policy_attachment.node,
    aws_eks_addon.before_nodes,
  ]
}

################################################################################
# Uncached baseline (var.uncached_baseline): the GPU group's twin without the cache,
# at 0 nodes. The rollout DAG scales it to 1 for the validation (a fresh node each
# time, so the start is a real cold pull), times each image there beside the cached
# start, and scales it back.
################################################################################

locals {
  # rollout keys of ml_cache_config, only while the group exists. Merged from a list: a conditional
  # `cond ? {...} : {}` would unify to map(string) and write `uncached_baseline: "true"`.
  baseline_rollout_config = merge([for group in aws_eks_node_group.gpu_baseline : {
    uncached_baseline        = true
    baseline_node_group_name = group.node_group_name
  }]...)
}

# A resource of its own rather than a for_each with the GPU group: lifecycle is static, and the
# GPU group must ignore its template version (the DAG owns it) while this one follows Terraform's.
resource "aws_eks_node_group" "gpu_baseline" {
  count = var.uncached_baseline ? 1 : 0

  cluster_name    = aws_eks_cluster.this.name
  node_group_name = "${local.name}-gpu-baseline"
  node_role_arn   = aws_iam_role.node.arn
  # Every private subnet, as the GPU group: no snapshot means no FSR zone to match, and EKS can then
  # find GPU capacity in any zone when the DAG asks for the one node.
  subnet_ids = aws_subnet.private[*].id

  ami_type       = local.gpu_ami_type
  capacity_type  = var.gpu_capacity_type
  instance_types = var.gpu_instance_types

  # 0/0/1 at rest; the DAG sets desired (and min/max as needed) for the validation and restores them.
  scaling_config {
    min_size     = 0
    max_size     = 1
    desired_size = 0
  }

  update_config {
    max_unavailable = 1
  }

  launch_template {
    id      = aws_launch_template.gpu["gpu_baseline"].id
    version = aws_launch_template.gpu["gpu_baseline"].default_version
  }

  # The GPU labels, but no cache: cached workloads selecting ml-cache/enabled=true never land here.
  labels = merge(local.gpu_node_labels, { "ml-cache/enabled" = "false" })

  taint {
    key    = "nvidia.com/gpu"
    value  = "true"
    effect = "NO_SCHEDULE"
  }

  tags = local.tags

  lifecycle {
    # remote_access: see the GPU node group.
    ignore_changes = [scaling_config[0].desired_size, remote_access]
  }

  depends_on = [
    aws_iam_role_policy_attachment.node,
    aws_eks_addon.before_nodes,
  ]
}

################################################################################
# System node group: small CPU nodes for cluster add-ons and controllers
################################################################################

resource "aws_launch_template" "system" {
  name          = "${local.name}-system"
  description   = "CPU nodes for system pods of ${local.name}"
  ebs_optimized = true

  update_default_version = true

  block_device_mappings {
    device_name = "/dev/xvda"

    ebs {
      volume_size           = 30
      volume_type           = "gp3"
      encrypted             = true
      kms_key_id            = var.kms_key_arn
      delete_on_termination = true
    }
  }

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  monitoring {
    enabled = true
  }

  tag_specifications {
    resource_type = "instance"
    tags          = merge(local.tags, { Name = "${local.name}-system" })
  }

  tags = local.tags
}

resource "aws_eks_node_group" "system" {
  cluster_name    = aws_eks_cluster.this.name
  node_group_name = "${local.name}-system"
  node_role_arn   = aws_iam_role.node.arn
  subnet_ids      = aws_subnet.private[*].id

  ami_type       = "AL2023_x86_64_STANDARD"
  instance_types = var.system_instance_types

  scaling_config {
    min_size     = var.system_min_size
    max_size     = var.system_max_size
    desired_size = var.system_desired_size
  }

  update_config {
    max_unavailable = 1
  }

  launch_template {
    id      = aws_launch_template.system.id
    version = aws_launch_template.system.default_version
  }

  labels = {
    "ml-cache/role" = "system"
  }

  tags = local.tags

  lifecycle {
    # remote_access: see the GPU node group.
    ignore_changes = [scaling_config[0].desired_size, remote_access]
  }

  depends_on = [
    aws_iam_role_policy_attachment.node,
    aws_eks_addon.before_nodes,
  ]
}
