# Airflow's way to the cluster: EKS Pod Identity for an Airflow in the cluster (the Helm recipe), the
# access entry of the role Airflow runs as, and the private API endpoint opened only to what is named.
# Applied against a mocked provider: `terraform test` (tests/terraform/test_static.py runs it).

mock_provider "aws" {
  source = "./tests/mocks"
}

# Plan-time values of what AWS would compute (a plan leaves them unknown otherwise).
override_resource {
  override_during = plan
  target          = aws_iam_role.airflow
  values          = { arn = "arn:aws:iam::111122223333:role/ml-container-cache-airflow-20261204" }
}

override_resource {
  override_during = plan
  target          = aws_iam_policy.airflow
  values          = { arn = "arn:aws:iam::111122223333:policy/ml-container-cache-airflow" }
}

override_resource {
  override_during = plan
  target          = aws_iam_policy.airflow_launch
  values          = { arn = "arn:aws:iam::111122223333:policy/ml-container-cache-airflow-launch" }
}

override_resource {
  override_during = plan
  target          = aws_iam_policy.airflow_registry
  values          = { arn = "arn:aws:iam::111122223333:policy/ml-container-cache-airflow-registry" }
}

override_resource {
  override_during = plan
  target          = aws_eks_cluster.this
  values          = { vpc_config = { cluster_security_group_id = "sg-0c1a55e7c1a55e7c1" } }
}

run "no_airflow_access_by_default" {
  command = plan

  assert {
    condition     = length(aws_iam_role.airflow) == 0 && length(aws_eks_pod_identity_association.airflow) == 0
    error_message = "An Airflow role or Pod Identity association exists without airflow_pod_identity."
  }

  assert {
    condition     = length(aws_eks_access_entry.airflow) == 0 && length(aws_eks_access_policy_association.airflow) == 0
    error_message = "An Airflow access entry exists although no Airflow principal is configured."
  }

  assert {
    condition     = length(aws_vpc_security_group_ingress_rule.cluster_api_from_airflow_sg) == 0 && length(aws_vpc_security_group_ingress_rule.cluster_api_from_airflow_cidr) == 0
    error_message = "The private API endpoint is opened although nothing was named."
  }
}

run "pod_identity_gives_the_service_account_every_airflow_policy_and_the_access_entry" {
  command = plan

  variables {
    airflow_pod_identity = { namespace = "airflow", service_account = "ml-cache-airflow" }
  }

  assert {
    condition     = aws_eks_pod_identity_association.airflow[0].namespace == "airflow" && aws_eks_pod_identity_association.airflow[0].service_account == "ml-cache-airflow"
    error_message = "The Pod Identity association names another service account."
  }

  assert {
    condition     = aws_eks_pod_identity_association.airflow[0].role_arn == aws_iam_role.airflow[0].arn && aws_eks_pod_identity_association.airflow[0].cluster_name == aws_eks_cluster.this.name
    error_message = "The association does not give this cluster's pods the Airflow role."
  }

  assert {
    condition = length(data.aws_iam_policy_document.airflow_pod_identity_assume.statement) == 1 && alltrue([
      for principal in data.aws_iam_policy_document.airflow_pod_identity_assume.statement[0].principals :
      principal.type == "Service" && principal.identifiers == toset(["pods.eks.amazonaws.com"])
    ])
    error_message = "The Airflow role must trust EKS Pod Identity only."
  }

  assert {
    condition     = toset([for attachment in aws_iam_role_policy_attachment.airflow : attachment.policy_arn]) == toset(output.airflow_policy_arns)
    error_message = "The Airflow role does not hold exactly the policies of airflow_policy_arns."
  }

  assert {
    condition     = aws_eks_access_entry.airflow[0].principal_arn == aws_iam_role.airflow[0].arn && output.airflow_kubernetes_principal_arn == aws_iam_role.airflow[0].arn
    error_message = "The access entry does not map the Pod Identity role."
  }

  assert {
    condition     = aws_eks_access_policy_association.airflow[0].access_scope[0].type == "namespace" && aws_eks_access_policy_association.airflow[0].access_scope[0].namespaces == toset(["ml-cache-validation"])
    error_message = "Airflow's Kubernetes rights are not limited to the validation namespace."
  }
}

run "registry_reads_are_attached_when_configured" {
  command = plan

  variables {
    airflow_pod_identity = { namespace = "airflow", service_account = "ml-cache-airflow" }
    registry_credentials = { "*.dkr.ecr.*.amazonaws.com" = { source = "ecr" } }
    ecr_repository_arns  = ["arn:aws:ecr:us-west-2:111122223333:repository/team/vllm"]
  }

  assert {
    condition     = length(aws_iam_role_policy_attachment.airflow) == 3 && contains(keys(aws_iam_role_policy_attachment.airflow), "registry")
    error_message = "The registry policy is not attached to the Airflow role."
  }
}

run "a_named_principal_wins_over_the_pod_identity_role" {
  command = plan

  variables {
    airflow_pod_identity             = { namespace = "airflow", service_account = "ml-cache-airflow" }
    airflow_kubernetes_principal_arn = "arn:aws:iam::111122223333:role/mwaa-execution"
  }

  assert {
    condition     = length(aws_eks_access_entry.airflow) == 1 && aws_eks_access_entry.airflow[0].principal_arn == "arn:aws:iam::111122223333:role/mwaa-execution"
    error_message = "airflow_kubernetes_principal_arn must be the one access entry."
  }
}

run "the_private_endpoint_opens_to_named_sources_only" {
  command = plan

  variables {
    airflow_api_access_security_group_ids = ["sg-0a1f10w0a1f10w0a1"]
    airflow_api_access_cidrs              = ["10.20.0.0/16"]
  }

  assert {
    condition     = aws_vpc_security_group_ingress_rule.cluster_api_from_airflow_sg["sg-0a1f10w0a1f10w0a1"].referenced_security_group_id == "sg-0a1f10w0a1f10w0a1" && aws_vpc_security_group_ingress_rule.cluster_api_from_airflow_cidr["10.20.0.0/16"].cidr_ipv4 == "10.20.0.0/16"
    error_message = "The ingress rules do not name the given sources."
  }

  assert {
    condition = alltrue([
      for rule in concat(values(aws_vpc_security_group_ingress_rule.cluster_api_from_airflow_sg), values(aws_vpc_security_group_ingress_rule.cluster_api_from_airflow_cidr)) :
      rule.security_group_id == "sg-0c1a55e7c1a55e7c1" && rule.from_port == 443 && rule.to_port == 443 && rule.ip_protocol == "tcp"
    ])
    error_message = "A rule opens something else than HTTPS on the cluster security group."
  }
}

run "the_whole_internet_is_refused" {
  command = plan

  variables {
    airflow_api_access_cidrs = ["0.0.0.0/0"]
  }

  expect_failures = [var.airflow_api_access_cidrs]
}
