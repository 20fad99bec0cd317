variable "endpoint_url" {
  description = "URL of the local cloud (moto server), for example http://127.0.0.1:5000"
  type        = string
}

variable "region" {
  description = "Region the local cloud emulates"
  type        = string
  default     = "us-west-2"
}

variable "name" {
  description = "Pipeline name (resource prefix and `ml-cache:pipeline` tag value)"
  type        = string
  default     = "ml-container-cache"
}
