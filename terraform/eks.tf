################################################################################
# EKS cluster
################################################################################

data "aws_iam_policy_document" "cluster_assume" {
  statement {
    actions = ["sts:AssumeRole", "sts:TagSession"]
    principals {
      type        = "Service"
      identifiers = ["eks.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "cluster" {
  name_prefix        = "${local.name}-cluster-"
  assume_role_policy = data.aws_iam_policy_document.cluster_assume.json

  tags = local.tags
}

resource "aws_iam_role_policy_attachment" "cluster" {
  for_each = toset(["AmazonEKSClusterPolicy", "AmazonEKSVPCResourceController"])

  role       = aws_iam_role.cluster.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/${each.value}"
}

resource "aws_cloudwatch_log_group" "cluster" {
  # The name EKS writes to: creating it first sets retention and encryption.
  name              = "/aws/eks/${local.name}/cluster"
  retention_in_days = var.cluster_log_retention_days
  kms_key_id        = var.kms_key_arn

  tags = local.tags
}

data "aws_iam_policy_document" "cluster_kms" {
  # checkov:skip=CKV_AWS_109:A key policy's Resource "*" is this key only; the root statement is AWS's default key policy (delegation to IAM)
  # checkov:skip=CKV_AWS_111:A key policy's Resource "*" is this key only; the root statement is AWS's default key policy (delegation to IAM)
  # checkov:skip=CKV_AWS_356:A key policy's Resource "*" is this key only: no narrower resource exists
  # The account's default key policy, stated: IAM policies of the account decide who uses the key.
  statement {
    sid       = "AccountAdministersTheKeyThroughIam"
    actions   = ["kms:*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["arn:${local.partition}:iam::${local.account_id}:root"]
    }
  }

  statement {
    sid = "ClusterRoleUsesTheKey"
    actions = [
      "kms:Encrypt",
      "kms:Decrypt",
      "kms:ListGrants",
      "kms:DescribeKey",
    ]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = [aws_iam_role.cluster.arn]
    }
  }
}

resource "aws_kms_key" "cluster" {
  description             = "Envelope encryption of Kubernetes secrets in ${local.name}"
  deletion_window_in_days = 7
  enable_key_rotation     = true
  policy                  = data.aws_iam_policy_document.cluster_kms.json

  tags = local.tags
}

resource "aws_eks_cluster" "this" {
  name     = local.name
  version  = var.cluster_version
  role_arn = aws_iam_role.cluster.arn

  enabled_cluster_log_types = var.cluster_log_types

  access_config {
    authentication_mode                         = "API"
    bootstrap_cluster_creator_admin_permissions = false
  }

  vpc_config {
    subnet_ids              = aws_subnet.private[*].id
    endpoint_private_access = true
    endpoint_public_access  = var.cluster_endpoint_public_access
    public_access_cidrs     = var.cluster_endpoint_public_access ? var.cluster_endpoint_public_access_cidrs : null
  }

  encryption_config {
    resources = ["secrets"]
    provider {
      key_arn = aws_kms_key.cluster.arn
    }
  }

  tags = local.tags

  lifecycle {
    # Only read at creation; EKS (and emulators) may not echo it back.
    ignore_changes = [access_config[0].bootstrap_cluster_creator_admin_permissions]

    precondition {
      condition     = !var.cluster_endpoint_public_access || length(var.cluster_endpoint_public_access_cidrs) > 0
      error_message = "A public Kubernetes API endpoint needs cluster_endpoint_public_access_cidrs (no default of 0.0.0.0/0)."
    }
  }

  depends_on = [
    aws_iam_role_policy_attachment.cluster,
    aws_cloudwatch_log_group.cluster,
  ]
}

################################################################################
# Access entries: the identity running Terraform, optionally Airflow
################################################################################

data "aws_iam_session_context" "current" {
  # The role behind an assumed-role session, which is what EKS access entries take.
  arn = data.aws_caller_identity.current.arn
}

resource "aws_eks_access_entry" "creator" {
  count = var.enable_cluster_creator_admin_permissions ? 1 : 0

  cluster_name  = aws_eks_cluster.this.name
  principal_arn = data.aws_iam_session_context.current.issuer_arn
  type          = "STANDARD"

  tags = local.tags
}

resource "aws_eks_access_policy_association" "creator" {
  count = var.enable_cluster_creator_admin_permissions ? 1 : 0

  cluster_name  = aws_eks_cluster.this.name
  principal_arn = aws_eks_access_entry.creator[0].principal_arn
  policy_arn    = "arn:${local.partition}:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"

  access_scope {
    type = "cluster"
  }
}

locals {
  # Airflow's Kubernetes identity: the role named by the variable, else the Pod Identity role (airflow_iam.tf).
  airflow_kubernetes_access = var.airflow_kubernetes_principal_arn != null || var.airflow_pod_identity != null
}

resource "aws_eks_access_entry" "airflow" {
  count = local.airflow_kubernetes_access ? 1 : 0

  cluster_name  = aws_eks_cluster.this.name
  principal_arn = coalesce(var.airflow_kubernetes_principal_arn, one(aws_iam_role.airflow[*].arn))
  type          = "STANDARD"

  tags = local.tags
}

resource "aws_eks_access_policy_association" "airflow" {
  count = local.airflow_kubernetes_access ? 1 : 0

  cluster_name  = aws_eks_cluster.this.name
  principal_arn = aws_eks_access_entry.airflow[0].principal_arn
  policy_arn    = "arn:${local.partition}:eks::aws:cluster-access-policy/AmazonEKSEditPolicy"

  access_scope {
    type       = "namespace"
    namespaces = var.airflow_kubernetes_namespaces
  }
}

# An Airflow outside the cluster reaches the private API endpoint through the cluster security group
# (nodes and pods of this cluster already do). https://docs.aws.amazon.com/eks/latest/userguide/cluster-endpoint.html
resource "aws_vpc_security_group_ingress_rule" "cluster_api_from_airflow_sg" {
  for_each = toset(var.airflow_api_access_security_group_ids)

  security_group_id            = aws_eks_cluster.this.vpc_config[0].cluster_security_group_id
  description                  = "Kubernetes API from Airflow (${each.value})"
  referenced_security_group_id = each.value
  ip_protocol                  = "tcp"
  from_port                    = 443
  to_port                      = 443

  tags = local.tags
}

resource "aws_vpc_security_group_ingress_rule" "cluster_api_from_airflow_cidr" {
  for_each = toset(var.airflow_api_access_cidrs)

  security_group_id = aws_eks_cluster.this.vpc_config[0].cluster_security_group_id
  description       = "Kubernetes API from Airflow (${each.value})"
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443

  tags = local.tags
}

################################################################################
# Core add-ons
################################################################################

locals {
  # coredns needs nodes to become healthy: it is created after the system node group.
  cluster_addons_before_nodes = var.enable_cluster_addons ? toset(["vpc-cni", "kube-proxy", "eks-pod-identity-agent"]) : toset([])
  cluster_addons_after_nodes  = var.enable_cluster_addons ? toset(["coredns"]) : toset([])
}

data "aws_eks_addon_version" "this" {
  for_each = setunion(local.cluster_addons_before_nodes, local.cluster_addons_after_nodes)

  addon_name         = each.value
  kubernetes_version = aws_eks_cluster.this.version
  most_recent        = true
}

# aws-node (vpc-cni) gets its ENI permissions through EKS Pod Identity, not from the node role that
# every pod on the node can reach through IMDS:
# https://docs.aws.amazon.com/eks/latest/userguide/cni-iam-role.html,
# https://docs.aws.amazon.com/eks/latest/userguide/pod-id-association.html
data "aws_iam_policy_document" "vpc_cni_assume" {
  statement {
    actions = ["sts:AssumeRole", "sts:TagSession"]
    principals {
      type        = "Service"
      identifiers = ["pods.eks.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "vpc_cni" {
  count = var.enable_cluster_addons ? 1 : 0

  name_prefix        = "${local.name}-vpc-cni-"
  description        = "aws-node (Amazon VPC CNI) of ${local.name}, through EKS Pod Identity"
  assume_role_policy = data.aws_iam_policy_document.vpc_cni_assume.json

  tags = local.tags
}

resource "aws_iam_role_policy_attachment" "vpc_cni" {
  count = var.enable_cluster_addons ? 1 : 0

  role       = aws_iam_role.vpc_cni[0].name
  policy_arn = "arn:${local.partition}:iam::aws:policy/AmazonEKS_CNI_Policy"
}

resource "aws_eks_addon" "before_nodes" {
  for_each = local.cluster_addons_before_nodes

  cluster_name                = aws_eks_cluster.this.name
  addon_name                  = each.value
  addon_version               = data.aws_eks_addon_version.this[each.value].version
  resolve_conflicts_on_create = "OVERWRITE"
  resolve_conflicts_on_update = "OVERWRITE"

  dynamic "pod_identity_association" {
    for_each = each.value == "vpc-cni" ? aws_iam_role.vpc_cni : []
    content {
      role_arn        = pod_identity_association.value.arn
      service_account = "aws-node"
    }
  }

  tags = local.tags

  depends_on = [aws_iam_role_policy_attachment.vpc_cni]
}

resource "aws_eks_addon" "after_nodes" {
  for_each = local.cluster_addons_after_nodes

  cluster_name                = aws_eks_cluster.this.name
  addon_name                  = each.value
  addon_version               = data.aws_eks_addon_version.this[each.value].version
  resolve_conflicts_on_create = "OVERWRITE"
  resolve_conflicts_on_update = "OVERWRITE"

  tags = local.tags

  depends_on = [aws_eks_node_group.system]
}
