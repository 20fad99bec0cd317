# The uncached baseline (var.uncached_baseline): off by default, nothing of it exists; on, a node group
# at 0/0/1 on the GPU template's twin with a blank cache volume, the GPU taint and labels but
# ml-cache/enabled=false, the rollout keys in ml_cache_config and the scaling call in Airflow's policy.
# Applied against a mocked provider: `terraform test` (tests/terraform/test_static.py runs it).

mock_provider "aws" {
  source = "./tests/mocks"
}

# Plan-time values of what AWS would compute (a plan leaves them unknown otherwise).
override_resource {
  override_during = plan
  target          = aws_launch_template.gpu
  values          = { id = "lt-0123456789abcdef0", default_version = 1 }
}

override_resource {
  override_during = plan
  target          = aws_iam_role.node
  values          = { arn = "arn:aws:iam::111122223333:role/ml-container-cache-node-20261204" }
}

override_resource {
  override_during = plan
  target          = aws_iam_role.builder
  values          = { arn = "arn:aws:iam::111122223333:role/ml-container-cache-builder" }
}

override_resource {
  override_during = plan
  target          = aws_iam_instance_profile.builder
  values          = { arn = "arn:aws:iam::111122223333:instance-profile/ml-container-cache-builder" }
}

override_resource {
  override_during = plan
  target          = aws_vpc.this
  values          = { id = "vpc-0123456789abcdef0", arn = "arn:aws:ec2:us-west-2:111122223333:vpc/vpc-0123456789abcdef0" }
}

override_resource {
  override_during = plan
  target          = aws_subnet.private
  values          = { id = "subnet-0123456789abcdef0" }
}

override_resource {
  override_during = plan
  target          = aws_security_group.builder
  values          = { id = "sg-0123456789abcdef0" }
}

override_resource {
  override_during = plan
  target          = aws_cloudwatch_log_group.build
  values          = { arn = "arn:aws:logs:us-west-2:111122223333:log-group:/ml-container-cache/build" }
}

run "off_by_default" {
  command = plan

  assert {
    condition     = keys(aws_launch_template.gpu) == ["gpu"] && length(aws_eks_node_group.gpu_baseline) == 0
    error_message = "A baseline template or node group exists although uncached_baseline is off."
  }

  assert {
    condition     = output.gpu_baseline_node_group_name == null
    error_message = "gpu_baseline_node_group_name is set although uncached_baseline is off."
  }

  assert {
    condition     = keys(yamldecode(output.ml_cache_config).rollout) == ["cache_device_name", "cluster_name", "launch_template_id", "node_group_name"]
    error_message = "ml_cache_config's rollout section names a baseline although uncached_baseline is off."
  }

  assert {
    condition     = !contains([for statement in jsondecode(output.airflow_policy_json).Statement : statement.Sid], "ScaleBaselineNodeGroup")
    error_message = "Airflow may scale a baseline group that does not exist."
  }
}

run "baseline_is_the_gpu_group_without_the_cache_at_zero_nodes" {
  command = plan

  variables {
    uncached_baseline = true
    gpu_node_labels   = { team = "ml-platform" }
  }

  assert {
    condition     = one([for mapping in aws_launch_template.gpu["gpu_baseline"].block_device_mappings : mapping.ebs[0].snapshot_id if mapping.device_name == "/dev/xvdb"]) == null
    error_message = "The baseline's cache volume is restored from a snapshot: its start would not be uncached."
  }

  assert {
    # Equal but for the cache snapshot (test_apply_local_cloud.py publishes one), the name and the Name tag.
    condition     = jsonencode([for mapping in aws_launch_template.gpu["gpu_baseline"].block_device_mappings : merge(mapping, { ebs = [merge(mapping.ebs[0], { snapshot_id = null })] })]) == jsonencode([for mapping in aws_launch_template.gpu["gpu"].block_device_mappings : merge(mapping, { ebs = [merge(mapping.ebs[0], { snapshot_id = null })] })]) && sha256(aws_launch_template.gpu["gpu_baseline"].user_data) == sha256(aws_launch_template.gpu["gpu"].user_data)
    error_message = "The baseline template's volumes or user data differ from the GPU template's."
  }

  assert {
    condition     = aws_launch_template.gpu["gpu_baseline"].name == "ml-container-cache-gpu-baseline" && alltrue([for spec in aws_launch_template.gpu["gpu_baseline"].tag_specifications : spec.tags["Name"] == "ml-container-cache-gpu-baseline"])
    error_message = "The baseline template and what it launches are not named as the baseline."
  }

  assert {
    condition     = aws_eks_node_group.gpu_baseline[0].node_group_name == "ml-container-cache-gpu-baseline" && aws_eks_node_group.gpu_baseline[0].launch_template[0].id == aws_launch_template.gpu["gpu_baseline"].id
    error_message = "The baseline group does not run the baseline template."
  }

  assert {
    condition     = aws_eks_node_group.gpu_baseline[0].scaling_config[0].min_size == 0 && aws_eks_node_group.gpu_baseline[0].scaling_config[0].desired_size == 0 && aws_eks_node_group.gpu_baseline[0].scaling_config[0].max_size == 1
    error_message = "The baseline group must rest at 0 nodes (min 0, desired 0, max 1)."
  }

  assert {
    condition     = [for taint in aws_eks_node_group.gpu_baseline[0].taint : taint] == [for taint in aws_eks_node_group.gpu.taint : taint] && length(aws_eks_node_group.gpu_baseline[0].taint) == 1
    error_message = "The baseline group lacks the GPU taint."
  }

  assert {
    condition     = aws_eks_node_group.gpu_baseline[0].labels == tomap(merge(aws_eks_node_group.gpu.labels, { "ml-cache/enabled" = "false" })) && aws_eks_node_group.gpu.labels["ml-cache/enabled"] == "true" && aws_eks_node_group.gpu_baseline[0].labels["team"] == "ml-platform"
    error_message = "The baseline group's labels are not the GPU group's with ml-cache/enabled=false."
  }

  assert {
    condition = (aws_eks_node_group.gpu_baseline[0].ami_type == aws_eks_node_group.gpu.ami_type && aws_eks_node_group.gpu_baseline[0].instance_types == aws_eks_node_group.gpu.instance_types
    && aws_eks_node_group.gpu_baseline[0].capacity_type == aws_eks_node_group.gpu.capacity_type && aws_eks_node_group.gpu_baseline[0].node_role_arn == aws_eks_node_group.gpu.node_role_arn)
    error_message = "The baseline node is not the GPU node (AMI type, instance types, capacity type, role)."
  }

  assert {
    condition     = output.gpu_baseline_node_group_name == "ml-container-cache-gpu-baseline"
    error_message = "gpu_baseline_node_group_name does not name the group."
  }

  assert {
    condition     = yamldecode(output.ml_cache_config).rollout.uncached_baseline == true && yamldecode(output.ml_cache_config).rollout.baseline_node_group_name == "ml-container-cache-gpu-baseline"
    error_message = "ml_cache_config's rollout section does not name the baseline (uncached_baseline must be a boolean)."
  }

  assert {
    condition = [for statement in jsondecode(output.airflow_policy_json).Statement : statement if statement.Sid == "ScaleBaselineNodeGroup"] == [{
      Sid      = "ScaleBaselineNodeGroup"
      Effect   = "Allow"
      Action   = ["eks:UpdateNodegroupConfig"]
      Resource = "arn:aws:eks:us-west-2:111122223333:nodegroup/ml-container-cache/ml-container-cache-gpu-baseline/*"
    }]
    error_message = "Airflow's policy does not let it scale the baseline group (and only scale it)."
  }
}
