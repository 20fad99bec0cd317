variable "name" {
  description = "Name prefix of the rule and queues (the pipeline name)"
  type        = string
}

variable "repository_names" {
  description = "ECR repositories (names, not ARNs) whose successful pushes start a build"
  type        = list(string)

  validation {
    condition     = length(var.repository_names) > 0
    error_message = "repository_names must name at least one ECR repository: an empty list would match no push."
  }
}

variable "message_retention_seconds" {
  description = "How long a push waits in the queue for Airflow's triggerer (SQS: 60 to 1,209,600)"
  type        = number
  default     = 345600 # 4 days: a triggerer down over a weekend loses nothing
}

variable "visibility_timeout_seconds" {
  description = "Queue default visibility timeout; the trigger sets its own per receive (burst + 600 s)"
  type        = number
  default     = 1500
}

variable "max_receive_count" {
  description = "Receives before a message moves to the dead-letter queue (the trigger deletes what it reads)"
  type        = number
  default     = 5
}

variable "tags" {
  description = "Tags of every resource"
  type        = map(string)
  default     = {}
}
