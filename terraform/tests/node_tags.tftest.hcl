# Nothing Terraform launches or tags may carry `ml-cache:role`: the Airflow policy trusts
# `ml-cache:role=builder` for terminate, snapshot and Run Command (modules/airflow-policy).
# Planned against a mocked provider: `terraform test` (tests/terraform/test_static.py runs it).

mock_provider "aws" {
  source = "./tests/mocks"
}

run "tags_cannot_name_the_role" {
  command = plan

  variables {
    tags = { "ML-Cache:Role" = "builder" }
  }

  expect_failures = [var.tags]
}

run "node_templates_and_groups_carry_no_role_tag" {
  command = plan

  variables {
    tags              = { team = "ml-platform" }
    uncached_baseline = true # its template and group too
  }

  assert {
    condition = alltrue(flatten([
      for template in concat(values(aws_launch_template.gpu), [aws_launch_template.system]) : [
        for spec in template.tag_specifications : !contains(keys(spec.tags), "ml-cache:role")
      ]
    ]))
    error_message = "A node launch template tags instances or volumes with ml-cache:role."
  }

  assert {
    condition = alltrue([
      for group in concat([aws_eks_node_group.gpu, aws_eks_node_group.system], aws_eks_node_group.gpu_baseline) : !contains(keys(group.tags), "ml-cache:role")
    ])
    error_message = "A node group carries ml-cache:role."
  }

  assert {
    condition     = length(aws_eks_node_group.gpu_baseline) == 1 && alltrue([for template in values(aws_launch_template.gpu) : template.tag_specifications[0].tags["team"] == "ml-platform"])
    error_message = "var.tags no longer reaches the node templates, or the baseline is missing (this test would prove nothing)."
  }
}

run "nodes_are_no_run_command_targets" {
  command = plan

  assert {
    condition     = !contains(keys(aws_iam_role_policy_attachment.node), "AmazonSSMManagedInstanceCore")
    error_message = "The node role must not carry AmazonSSMManagedInstanceCore."
  }

  assert {
    condition     = !contains(keys(aws_iam_role_policy_attachment.node), "AmazonEKS_CNI_Policy")
    error_message = "With the managed vpc-cni add-on, aws-node gets the CNI policy through Pod Identity, not the node role."
  }

  assert {
    condition     = [for association in aws_eks_addon.before_nodes["vpc-cni"].pod_identity_association : association.service_account] == ["aws-node"]
    error_message = "The vpc-cni add-on must associate aws-node with its Pod Identity role."
  }
}
