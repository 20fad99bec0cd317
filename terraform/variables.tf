################################################################################
# General
################################################################################

variable "name" {
  description = "Pipeline name: prefix of every resource name and the value of the `ml-cache:pipeline` tag the DAGs set and the Airflow policy requires"
  type        = string
  default     = "ml-container-cache"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}[a-z0-9]$", var.name))
    error_message = "name must be 3-32 lowercase letters, digits or dashes, starting with a letter."
  }
}

variable "tags" {
  description = "Tags added to every resource this configuration creates (nodes included); `ml-cache:` keys are the pipeline's own"
  type        = map(string)
  default     = {}

  validation {
    # The Airflow policy trusts `ml-cache:role=builder` on instances and volumes: a node template that
    # carried it would let Airflow terminate, snapshot and Run Command the nodes.
    condition     = alltrue([for key in keys(var.tags) : !startswith(lower(key), "ml-cache:")])
    error_message = "tags must not use the `ml-cache:` prefix: the pipeline sets those keys itself and IAM trusts them."
  }
}

################################################################################
# VPC
################################################################################

variable "vpc_cidr" {
  description = "CIDR block of the VPC; split into one public and one private subnet per availability zone"
  type        = string
  default     = "10.0.0.0/16"
}

variable "availability_zones" {
  description = "Availability zones to use, in order (pins them); empty = the first availability_zone_count zones of the region"
  type        = list(string)
  default     = []
}

variable "availability_zone_count" {
  description = "Number of availability zones to spread subnets (and the GPU node group, hence Fast Snapshot Restore) over"
  type        = number
  default     = 3

  validation {
    condition     = var.availability_zone_count >= 2 && var.availability_zone_count <= 6
    error_message = "EKS needs subnets in at least 2 availability zones; at most 6 are supported here."
  }
}

variable "single_nat_gateway" {
  description = "One NAT gateway for all private subnets (cheaper) instead of one per availability zone (survives an AZ outage)"
  type        = bool
  default     = true
}

variable "enable_vpc_endpoints" {
  description = "Create interface endpoints (SSM, SSM messages, EC2 messages, ECR API, ECR DKR, EC2) and an S3 gateway endpoint, so a builder in a subnet without egress can still be managed and pull from ECR"
  type        = bool
  default     = false
}

################################################################################
# EKS cluster
################################################################################

variable "cluster_version" {
  description = "Kubernetes version of the EKS cluster (also the version of the EKS-optimized AMI the builder uses)"
  type        = string
  default     = "1.33"
}

variable "cluster_endpoint_public_access" {
  description = "Also expose the Kubernetes API endpoint publicly, to cluster_endpoint_public_access_cidrs only (Terraform itself never calls the Kubernetes API; kubectl and the validation pods of the rollout DAG do)"
  type        = bool
  default     = false
}

variable "cluster_endpoint_public_access_cidrs" {
  description = "CIDR blocks allowed to reach the public Kubernetes API endpoint; required when cluster_endpoint_public_access is true"
  type        = list(string)
  default     = []
}

variable "cluster_log_types" {
  description = "EKS control plane log types sent to CloudWatch Logs"
  type        = list(string)
  default     = ["api", "audit", "authenticator", "controllerManager", "scheduler"]
}

variable "cluster_log_retention_days" {
  description = "Retention of the control plane log group, in days"
  type        = number
  default     = 365
}

variable "enable_cluster_creator_admin_permissions" {
  description = "Create an EKS access entry with cluster-admin for the identity running Terraform"
  type        = bool
  default     = true
}

variable "enable_cluster_addons" {
  description = "Manage the core add-ons (vpc-cni, coredns, kube-proxy, eks-pod-identity-agent) with Terraform. Turned off for emulators without the add-on API"
  type        = bool
  default     = true
}

variable "airflow_kubernetes_principal_arn" {
  description = "Optional IAM principal (role ARN) the Airflow workers use; given an EKS access entry with namespace-scoped edit rights in airflow_kubernetes_namespaces so the rollout DAG can run validation pods. null = none"
  type        = string
  default     = null
}

variable "airflow_pod_identity" {
  description = "Airflow in this cluster: the namespace and service account of its workers, triggerer and DAG processor. Creates a role with every Airflow policy, its EKS Pod Identity association and (unless airflow_kubernetes_principal_arn names another role) its access entry. null = none"
  type = object({
    namespace       = string
    service_account = string
  })
  default = null
}

variable "airflow_api_access_security_group_ids" {
  description = "Security groups of an Airflow outside this cluster (MWAA, another cluster, EC2) allowed to reach the private Kubernetes API endpoint on 443"
  type        = list(string)
  default     = []
}

variable "airflow_api_access_cidrs" {
  description = "CIDR blocks of an Airflow outside this VPC (peered or through a transit gateway) allowed to reach the private Kubernetes API endpoint on 443"
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for cidr in var.airflow_api_access_cidrs : can(cidrnetmask(cidr)) && !endswith(cidr, "/0")])
    error_message = "airflow_api_access_cidrs takes IPv4 CIDR blocks narrower than /0."
  }
}

variable "airflow_kubernetes_namespaces" {
  description = "Namespaces the Airflow principal may edit (validation pods)"
  type        = list(string)
  default     = ["ml-cache-validation"]
}

################################################################################
# Node groups
################################################################################

variable "gpu_instance_types" {
  description = "Instance types of the GPU node group"
  type        = list(string)
  default     = ["g6e.xlarge"]
}

variable "gpu_capacity_type" {
  description = "ON_DEMAND or SPOT for the GPU node group"
  type        = string
  default     = "ON_DEMAND"

  validation {
    condition     = contains(["ON_DEMAND", "SPOT"], var.gpu_capacity_type)
    error_message = "gpu_capacity_type must be ON_DEMAND or SPOT."
  }
}

variable "gpu_min_size" {
  description = "Minimum number of GPU nodes"
  type        = number
  default     = 0
}

variable "gpu_max_size" {
  description = "Maximum number of GPU nodes"
  type        = number
  default     = 2
}

variable "gpu_desired_size" {
  description = "Initial number of GPU nodes (later changes by autoscalers are ignored)"
  type        = number
  default     = 1
}

variable "gpu_node_labels" {
  description = "Kubernetes labels of the GPU nodes, added to the cache labels this configuration sets"
  type        = map(string)
  default     = {}
}

variable "uncached_baseline" {
  description = "Add a node group `<name>-gpu-baseline`: the GPU nodes without the cache (blank cache volume), at 0 nodes. The rollout DAG scales it to 1 to time each image uncached beside the cached start (rollout.uncached_baseline of ml_cache_config). Costs nothing at 0 nodes; one GPU node for the validation's minutes per rollout"
  type        = bool
  default     = false
}

variable "gpu_root_volume_size_gib" {
  description = "Size of the GPU nodes' root volume, in GiB"
  type        = number
  default     = 50
}

variable "cache_volume_size_gib" {
  description = "Size of the cache volume mounted at /var/lib/containerd, in GiB; must be at least the snapshot's size (the build's volume_size_gib)"
  type        = number
  default     = 100
}

variable "cache_volume_iops" {
  description = "Provisioned IOPS of the gp3 cache volume"
  type        = number
  default     = 3000
}

variable "cache_volume_throughput_mibps" {
  description = "Provisioned throughput of the gp3 cache volume, in MiB/s"
  type        = number
  default     = 250
}

variable "notification_topic_arns" {
  description = "SNS topics of the DAG config's notifications.sns_topic_arn: Airflow's policy may publish to these only"
  type        = list(string)
  default     = []
}

variable "build_log_group_name" {
  description = "CloudWatch Logs group the SSM agent streams the builder's output to while it runs (DAG config aws.build_log_group); null = /<name>/build"
  type        = string
  default     = null
}

variable "build_log_retention_days" {
  description = "Days the builder's output is kept in CloudWatch Logs"
  type        = number
  default     = 30
}

variable "kms_key_arn" {
  description = "KMS key for EBS volumes (nodes, cache) and the builder; null = the account's default EBS key. Snapshots stay incremental only with the same key"
  type        = string
  default     = null
}

variable "system_instance_types" {
  description = "Instance types of the small CPU node group for system pods (coredns, controllers)"
  type        = list(string)
  default     = ["m6i.large"]
}

variable "system_min_size" {
  description = "Minimum number of system nodes"
  type        = number
  default     = 1
}

variable "system_max_size" {
  description = "Maximum number of system nodes"
  type        = number
  default     = 3
}

variable "system_desired_size" {
  description = "Initial number of system nodes (later changes by autoscalers are ignored)"
  type        = number
  default     = 2
}

################################################################################
# Image cache pipeline
################################################################################

variable "snapshot_id_placeholder" {
  description = "Value of the snapshot-id parameter before the first build. Anything that is not a `snap-` id means \"no cache yet\": nodes then get a blank cache volume"
  type        = string
  default     = "none"

  validation {
    condition     = !can(regex("^snap-", var.snapshot_id_placeholder))
    error_message = "The placeholder must not look like a snapshot id."
  }
}

variable "ml_cache_base_config" {
  description = "YAML text of the DAGs' config file (plugins/ml_cache/defaults/ml_container_cache.yaml) that ml_cache_config completes with what Terraform knows; empty = only Terraform's keys"
  type        = string
  default     = ""
}

variable "builder_instance_types" {
  description = "Instance types the build DAG may launch builders as, in the order tried (build.instance_types of ml_cache_config; the Airflow policy allows exactly these)"
  type        = list(string)
  default     = ["c6i.2xlarge", "m6i.2xlarge", "c5.2xlarge"]

  validation {
    condition     = length(var.builder_instance_types) > 0
    error_message = "builder_instance_types must name at least one instance type."
  }
}

variable "builder_ami_owner_ids" {
  description = "Accounts owning the EKS-optimized AMIs the builder boots (ec2:Owner of RunInstances). 602401143452 publishes them in most regions; opt-in and partition regions use their own account: check with `aws ec2 describe-images --image-ids $(aws ssm get-parameter --name /aws/service/eks/optimized-ami/<version>/amazon-linux-2023/x86_64/standard/recommended/image_id --query Parameter.Value --output text) --query Images[0].OwnerId`"
  type        = list(string)
  default     = ["602401143452"]
}

variable "ml_cache_build_config" {
  description = "Extra keys merged into the `build` section of the ml_cache_config output (images, instance_types, ...); Terraform fills in kubernetes_version, architecture, volume sizing and fsr_availability_zones"
  type        = any
  default     = {}
}

################################################################################
# Private registries (README.md, "Private registries")
################################################################################

variable "registry_credentials" {
  description = "Registry host or host pattern -> where its credentials come from: {source = \"ecr\"}, {source = \"secretsmanager\", secret_arn = ARN}, {source = \"ssm_secure_parameter\", parameter_name = NAME} or {source = \"anonymous\"}. Becomes aws.registry_credentials of ml_cache_config; the builder role and the Airflow policy may read exactly these secrets and parameters"
  type = map(object({
    source         = string
    secret_arn     = optional(string)
    parameter_name = optional(string)
  }))
  default = {}

  validation {
    # The builder spec schema's $defs/registry_host_pattern: `*` stands for one DNS label or part of one.
    condition = alltrue([for host in keys(var.registry_credentials) :
    can(regex("^([a-zA-Z0-9*]|[a-zA-Z0-9*][a-zA-Z0-9*-]*[a-zA-Z0-9*])([.]([a-zA-Z0-9*]|[a-zA-Z0-9*][a-zA-Z0-9*-]*[a-zA-Z0-9*]))*(:[0-9]{1,5})?$", host))])
    error_message = "registry_credentials keys must be registry hosts[:port] or host patterns such as *.dkr.ecr.*.amazonaws.com."
  }

  validation {
    condition     = alltrue([for credential in values(var.registry_credentials) : contains(["ecr", "secretsmanager", "ssm_secure_parameter", "anonymous"], credential.source)])
    error_message = "registry_credentials: source must be one of ecr, secretsmanager, ssm_secure_parameter, anonymous."
  }

  validation {
    condition = alltrue([for credential in values(var.registry_credentials) :
      credential.source != "secretsmanager" || (credential.parameter_name == null &&
    can(regex("^arn:aws[a-z-]*:secretsmanager:[a-z]{2}(-[a-z]+)+-[0-9]+:[0-9]{12}:secret:[A-Za-z0-9/_+=.@-]{1,512}$", coalesce(credential.secret_arn, "-"))))])
    error_message = "registry_credentials: a secretsmanager source takes exactly secret_arn, the secret's full ARN (arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME-SUFFIX, no wildcard)."
  }

  validation {
    condition = alltrue([for credential in values(var.registry_credentials) :
      credential.source != "ssm_secure_parameter" || (credential.secret_arn == null &&
        # RE2 repeats stop at 1000: the schema's {1,1011} is a length check here.
    can(regex("^/?[A-Za-z0-9_./-]+$", coalesce(credential.parameter_name, "*"))) && try(length(trimprefix(credential.parameter_name, "/")) <= 1011, false))])
    error_message = "registry_credentials: an ssm_secure_parameter source takes exactly parameter_name, the SecureString parameter's name (no wildcard)."
  }

  validation {
    condition = alltrue([for credential in values(var.registry_credentials) :
    !contains(["ecr", "anonymous"], credential.source) || (credential.secret_arn == null && credential.parameter_name == null)])
    error_message = "registry_credentials: ecr and anonymous sources take no secret_arn or parameter_name."
  }
}

variable "ecr_repository_arns" {
  description = "Full ARNs of the ECR repositories images come from, in any account and region; the builder and Airflow may pull exactly these (no wildcard). A repository of another account must also grant both roles in its repository policy"
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for arn in var.ecr_repository_arns : !can(regex("[*?]", try(split(":repository/", arn)[1], arn)))])
    error_message = "ecr_repository_arns: a wildcard (* or ?) in the repository part would grant repositories nobody configured; list each repository's full ARN."
  }

  validation {
    condition = alltrue([for arn in var.ecr_repository_arns :
    can(regex("^arn:aws[a-z-]*:ecr:[a-z]{2}(-[a-z]+)+-[0-9]+:[0-9]{12}:repository/([a-z0-9]+([._-][a-z0-9]+)*/)*[a-z0-9]+([._-][a-z0-9]+)*$", arn))])
    error_message = "ecr_repository_arns must be full repository ARNs: arn:aws:ecr:REGION:ACCOUNT:repository/NAME."
  }
}

variable "registry_kms_key_arns" {
  description = "Customer managed KMS keys of the configured secrets and SecureString parameters (decrypt only through Secrets Manager and SSM); empty = the AWS managed keys aws/secretsmanager and aws/ssm"
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for arn in var.registry_kms_key_arns : can(regex("^arn:aws[a-z-]*:kms:[a-z]{2}(-[a-z]+)+-[0-9]+:[0-9]{12}:key/(mrk-)?[0-9a-f-]+$", arn))])
    error_message = "registry_kms_key_arns must be key ARNs (arn:aws:kms:REGION:ACCOUNT:key/ID); aliases do not authorize kms:Decrypt."
  }
}

variable "registry_endpoints" {
  description = "Registry host -> URL its registry API is reached at (a pull-through mirror); becomes aws.registry_endpoints of ml_cache_config. A host not listed is reached at https://<host>"
  type        = map(string)
  default     = {}

  validation {
    condition = alltrue([for host, url in var.registry_endpoints :
      can(regex("^([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])([.]([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*(:[0-9]{1,5})?$", host)) &&
    can(regex("^https?://([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])([.]([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*(:[0-9]{1,5})?$", url))])
    error_message = "registry_endpoints maps an exact registry host[:port] (no pattern) to a URL like https://mirror.example.com or http://127.0.0.1:5000 (no path)."
  }
}

################################################################################
# Build on push
################################################################################

variable "ecr_push_events" {
  description = "Build on push: successful pushes to these ECR repositories (names, in this account and Region) reach an SQS queue through an EventBridge rule; Airflow reads it (set ML_CACHE_PUSH_QUEUE_URL to the ecr_push_queue_url output). null = off (weekly builds only)"
  type = object({
    repository_names          = list(string)
    message_retention_seconds = optional(number, 345600)
  })
  default = null

  validation {
    condition     = try(length(var.ecr_push_events.repository_names) > 0, var.ecr_push_events == null)
    error_message = "ecr_push_events.repository_names must name at least one ECR repository: an empty list would match no push."
  }
}
