################################################################################
# VPC
################################################################################

output "vpc_id" {
  description = "ID of the VPC"
  value       = aws_vpc.this.id
}

output "private_subnet_ids" {
  description = "Private subnets (nodes, builder), one per availability zone"
  value       = aws_subnet.private[*].id
}

output "public_subnet_ids" {
  description = "Public subnets (load balancers, NAT gateways), one per availability zone"
  value       = aws_subnet.public[*].id
}

output "availability_zones" {
  description = "Availability zones of the subnets and the GPU node group (where Fast Snapshot Restore must be enabled)"
  value       = local.azs
}

################################################################################
# EKS
################################################################################

output "cluster_name" {
  description = "Name of the EKS cluster"
  value       = aws_eks_cluster.this.name
}

output "cluster_arn" {
  description = "ARN of the EKS cluster"
  value       = aws_eks_cluster.this.arn
}

output "cluster_endpoint" {
  description = "Endpoint of the Kubernetes API"
  value       = aws_eks_cluster.this.endpoint
}

output "cluster_version" {
  description = "Kubernetes version of the cluster"
  value       = aws_eks_cluster.this.version
}

output "gpu_node_group_name" {
  description = "Name of the GPU node group the rollout DAG updates"
  value       = aws_eks_node_group.gpu.node_group_name
}

output "gpu_node_group_arn" {
  description = "ARN of the GPU node group"
  value       = aws_eks_node_group.gpu.arn
}

output "gpu_baseline_node_group_name" {
  description = "Name of the uncached baseline node group (rollout.baseline_node_group_name); null when uncached_baseline is off"
  value       = one(aws_eks_node_group.gpu_baseline[*].node_group_name)
}

output "system_node_group_name" {
  description = "Name of the CPU node group for system pods"
  value       = aws_eks_node_group.system.node_group_name
}

output "gpu_launch_template_id" {
  description = "ID of the GPU node group's launch template (the rollout DAG adds versions to it)"
  value       = aws_launch_template.gpu["gpu"].id
}

output "gpu_launch_template_name" {
  description = "Name of the GPU node group's launch template"
  value       = aws_launch_template.gpu["gpu"].name
}

output "gpu_launch_template_default_version" {
  description = "Default version of the GPU launch template: Terraform's latest content"
  value       = aws_launch_template.gpu["gpu"].default_version
}

output "cache_snapshot_id" {
  description = "Snapshot the GPU launch template restores the cache volume from; null while the parameter holds the placeholder"
  value       = local.cache_snapshot_id
}

################################################################################
# Image cache pipeline
################################################################################

output "snapshot_id_parameter_name" {
  description = "SSM parameter holding the published snapshot id (written by the build DAG)"
  value       = aws_ssm_parameter.snapshot_id.name
}

output "snapshot_metadata_parameter_name" {
  description = "SSM parameter holding the published snapshot's metadata (written by the build DAG)"
  value       = aws_ssm_parameter.snapshot_metadata.name
}

output "ssm_document_name" {
  description = "SSM document the build DAG registers and runs on builders"
  value       = local.ssm_document_name
}

output "build_log_group_name" {
  description = "CloudWatch Logs group of the builder's output (DAG config aws.build_log_group)"
  value       = aws_cloudwatch_log_group.build.name
}

output "builder_instance_profile_name" {
  description = "Instance profile of the builder"
  value       = aws_iam_instance_profile.builder.name
}

output "builder_instance_profile_arn" {
  description = "ARN of the builder's instance profile"
  value       = aws_iam_instance_profile.builder.arn
}

output "builder_role_arn" {
  description = "IAM role of the builder (the only role the Airflow policy may pass)"
  value       = aws_iam_role.builder.arn
}

output "builder_security_group_id" {
  description = "Security group of the builder (no ingress)"
  value       = aws_security_group.builder.id
}

output "builder_subnet_ids" {
  description = "Subnets the builder may be launched in, tried in order"
  value       = aws_subnet.private[*].id
}

output "airflow_policy_arn" {
  description = "The Airflow policy with the DAGs' calls but the registry reads; attach every ARN of airflow_policy_arns"
  value       = aws_iam_policy.airflow.arn
}

output "airflow_registry_policy_arn" {
  description = "The Airflow policy with the registry reads of resolve_images; null when no registry credentials are configured"
  value       = one(aws_iam_policy.airflow_registry[*].arn)
}

output "airflow_policy_arns" {
  description = "Every IAM policy Airflow needs (two to four: a managed policy holds 6,144 characters): attach them all to the Airflow workers' role"
  value       = concat([aws_iam_policy.airflow.arn, aws_iam_policy.airflow_launch.arn], aws_iam_policy.airflow_registry[*].arn, aws_iam_policy.airflow_push[*].arn)
}

output "ecr_push_queue_url" {
  description = "Build on push: the SQS queue of ECR push events; give it to Airflow as ML_CACHE_PUSH_QUEUE_URL. null when ecr_push_events is off"
  value       = one(module.ecr_push_events[*].queue_url)
}

output "airflow_push_policy_json" {
  description = "The Airflow policy for the push queue (IAM JSON); null when ecr_push_events is off"
  value       = one(module.ecr_push_events[*].airflow_json)
}

output "airflow_role_arn" {
  description = "The Airflow role of airflow_pod_identity (every Airflow policy, Pod Identity, access entry); null without it"
  value       = one(aws_iam_role.airflow[*].arn)
}

output "airflow_kubernetes_principal_arn" {
  description = "The IAM principal Airflow's EKS access entry maps (validation pods); null when none"
  value       = one(aws_eks_access_entry.airflow[*].principal_arn)
}

output "cluster_security_group_id" {
  description = "Security group of the EKS control plane ENIs (the private Kubernetes API endpoint)"
  value       = aws_eks_cluster.this.vpc_config[0].cluster_security_group_id
}

output "builder_registry_policy_json" {
  description = "The builder role's registry policy, as attached (ECR, secrets and parameters of the configured sources only)"
  value       = module.registry_read_policy.builder_json
}

output "airflow_policy_json" {
  description = "The Airflow policy document, as attached"
  value       = module.airflow_policy.json
}

output "airflow_launch_policy_json" {
  description = "The Airflow builder launch policy document, as attached"
  value       = module.airflow_policy.launch_json
}

output "airflow_registry_policy_json" {
  description = "The Airflow registry policy document, as attached; null when no registry credentials are configured"
  value       = module.registry_read_policy.json
}

output "ml_cache_config" {
  description = "YAML configuration of the DAGs (plugins/ml_cache/defaults/ml_container_cache.yaml shape): `terraform output -raw ml_cache_config > ml_cache.yaml` and set ML_CACHE_CONFIG to its path"
  value = yamlencode(merge(local.ml_cache_base_config, {
    pipeline = local.name
    aws = merge(lookup(local.ml_cache_base_config, "aws", {}), {
      region                 = local.region
      subnet_ids             = aws_subnet.private[*].id
      security_group_ids     = [aws_security_group.builder.id]
      instance_profile       = aws_iam_instance_profile.builder.name
      ssm_parameter          = aws_ssm_parameter.snapshot_id.name
      ssm_metadata_parameter = aws_ssm_parameter.snapshot_metadata.name
      ssm_document           = local.ssm_document_name
      build_log_group        = aws_cloudwatch_log_group.build.name
      kms_key_id             = var.kms_key_arn
      # Terraform's entries win over the config file's: the IAM above is rendered from them.
      registry_credentials = merge(lookup(lookup(local.ml_cache_base_config, "aws", {}), "registry_credentials", {}), {
        for host, credential in var.registry_credentials : host => { for key, value in credential : key => value if value != null }
      })
      registry_endpoints = merge(lookup(lookup(local.ml_cache_base_config, "aws", {}), "registry_endpoints", {}), var.registry_endpoints)
    })
    build = merge(lookup(local.ml_cache_base_config, "build", {}), {
      architecture            = "x86_64"
      kubernetes_version      = aws_eks_cluster.this.version
      volume_size_gib         = var.cache_volume_size_gib
      volume_iops             = var.cache_volume_iops
      volume_throughput_mibps = var.cache_volume_throughput_mibps
      fsr_availability_zones  = local.azs
      }, var.ml_cache_build_config, {
      # The Airflow policy allows exactly these (RunInstances ec2:InstanceType): one source for both.
      instance_types = var.builder_instance_types
    })
    rollout = merge({
      cluster_name       = aws_eks_cluster.this.name
      node_group_name    = aws_eks_node_group.gpu.node_group_name
      launch_template_id = aws_launch_template.gpu["gpu"].id
      cache_device_name  = local.cache_device_name
    }, local.baseline_rollout_config)
  }))
}

output "airflow_connection_env" {
  description = "Environment line that points the DAGs' aws_default connection at this region (credentials come from the workers' role)"
  value       = "AIRFLOW_CONN_AWS_DEFAULT='${jsonencode({ conn_type = "aws", extra = { region_name = local.region } })}'"
}
