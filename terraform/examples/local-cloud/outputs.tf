output "cluster_name" {
  description = "Name of the EKS cluster"
  value       = module.ml_container_cache.cluster_name
}

output "gpu_node_group_name" {
  description = "Name of the GPU node group"
  value       = module.ml_container_cache.gpu_node_group_name
}

output "gpu_baseline_node_group_name" {
  description = "Name of the uncached baseline node group (null when uncached_baseline is off)"
  value       = module.ml_container_cache.gpu_baseline_node_group_name
}

output "gpu_launch_template_id" {
  description = "ID of the GPU launch template"
  value       = module.ml_container_cache.gpu_launch_template_id
}

output "snapshot_id_parameter_name" {
  description = "SSM parameter holding the published snapshot id"
  value       = module.ml_container_cache.snapshot_id_parameter_name
}

output "airflow_policy_arn" {
  description = "The Airflow policy but the registry reads (airflow_policy_arns lists every policy to attach)"
  value       = module.ml_container_cache.airflow_policy_arn
}

output "airflow_policy_arns" {
  description = "Attach every one of these policies to the Airflow workers' role"
  value       = module.ml_container_cache.airflow_policy_arns
}

output "ml_cache_config" {
  description = "YAML configuration of the DAGs"
  value       = module.ml_container_cache.ml_cache_config
}

output "airflow_connection_env" {
  description = "Environment line for the aws_default Airflow connection"
  value       = module.ml_container_cache.airflow_connection_env
}

output "vpc_id" {
  description = "ID of the VPC"
  value       = module.ml_container_cache.vpc_id
}

output "private_subnet_ids" {
  description = "Private subnets, one per availability zone"
  value       = module.ml_container_cache.private_subnet_ids
}

output "availability_zones" {
  description = "Availability zones of the subnets and the GPU node group"
  value       = module.ml_container_cache.availability_zones
}

output "builder_instance_profile_name" {
  description = "Instance profile of the builder"
  value       = module.ml_container_cache.builder_instance_profile_name
}

output "builder_security_group_id" {
  description = "Security group of the builder"
  value       = module.ml_container_cache.builder_security_group_id
}

output "cache_snapshot_id" {
  description = "Snapshot the GPU launch template restores the cache volume from (null before the first build)"
  value       = module.ml_container_cache.cache_snapshot_id
}

output "airflow_policy_json" {
  description = "The Airflow policy document"
  value       = module.ml_container_cache.airflow_policy_json
}

output "airflow_launch_policy_json" {
  description = "The Airflow builder launch policy document"
  value       = module.ml_container_cache.airflow_launch_policy_json
}

output "airflow_registry_policy_json" {
  description = "The Airflow registry policy document (null without registry credentials)"
  value       = module.ml_container_cache.airflow_registry_policy_json
}

output "builder_registry_policy_json" {
  description = "The builder role's registry policy (configured sources only)"
  value       = module.ml_container_cache.builder_registry_policy_json
}

output "build_log_group_name" {
  description = "CloudWatch Logs group of the builder's output"
  value       = module.ml_container_cache.build_log_group_name
}

output "ecr_push_queue_url" {
  description = "Build on push: the queue to give Airflow as ML_CACHE_PUSH_QUEUE_URL (null when off)"
  value       = module.ml_container_cache.ecr_push_queue_url
}
