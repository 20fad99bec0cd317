# The AWS data sources every terraform test of the root module reads, mocked once
# (`mock_provider "aws" { source = "./tests/mocks" }`).

mock_data "aws_availability_zones" {
  defaults = { names = ["us-west-2a", "us-west-2b", "us-west-2c"] }
}
mock_data "aws_caller_identity" {
  defaults = { account_id = "111122223333", arn = "arn:aws:iam::111122223333:user/terraform" }
}
mock_data "aws_partition" {
  defaults = { partition = "aws", dns_suffix = "amazonaws.com" }
}
mock_data "aws_region" {
  defaults = { name = "us-west-2" }
}
mock_data "aws_iam_session_context" {
  defaults = { issuer_arn = "arn:aws:iam::111122223333:user/terraform" }
}
mock_data "aws_iam_policy_document" {
  defaults = { json = "{}" }
}
