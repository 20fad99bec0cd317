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

output "airflow_role_arn" {
  description = "Airflow's Pod Identity role (airflow_pod_identity); null without it"
  value       = module.ml_container_cache.airflow_role_arn
}

output "build_log_group_name" {
  description = "CloudWatch Logs group of the builder's output"
  value       = module.ml_container_cache.build_log_group_name
}

output "ecr_push_queue_url" {
  description = "Build on push: the queue to give Airflow as ML_CACHE_PUSH_QUEUE_URL (null when off)"
  value       = module.ml_container_cache.ecr_push_queue_url
}
