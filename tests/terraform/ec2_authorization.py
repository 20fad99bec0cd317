"""What IAM authorizes for one RunInstances request, derived from the request itself.

EC2 authorizes RunInstances once per resource it touches (instance, each volume, the network interface,
its subnet and security groups, the image and the snapshots behind it), each with that resource's
condition keys, then CreateTags for the tags of TagSpecifications (ec2:CreateAction=RunInstances) and
iam:PassRole for the instance profile's role:
https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/ExamplePolicies_EC2.html#iam-example-runinstances
and https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonec2.html.
Feeding builder_request()'s real output here tests the producer against the policy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tf_iam_eval import Request


@dataclass(frozen=True)
class Account:
    """Where the request runs and what its names resolve to."""

    account: str
    region: str
    vpc_arn: str
    profile_arn: str  # the ARN of the profile the request names
    role_arn: str  # the role in that profile
    ami_owner: str


def _request_tags(request: dict[str, Any], resource_type: str) -> dict[str, Any]:
    tags = {t["Key"]: t["Value"] for spec in request.get("TagSpecifications", [])
            if spec["ResourceType"] == resource_type for t in spec["Tags"]}
    context: dict[str, Any] = {f"aws:RequestTag/{key}": value for key, value in tags.items()}
    if tags:
        context["aws:TagKeys"] = sorted(tags)
    return context


def run_instances_calls(request: dict[str, Any], where: Account) -> list[Request]:
    """Every authorization one RunInstances call with `request` (boto3 parameters) needs."""
    ec2 = f"arn:aws:ec2:{where.region}:{where.account}"
    interface = request["NetworkInterfaces"][0]
    subnet_arn = f"{ec2}:subnet/{interface['SubnetId']}"
    in_vpc = {"ec2:Vpc": where.vpc_arn}
    instance_context = {
        **_request_tags(request, "instance"),
        "ec2:InstanceType": request["InstanceType"],
        "ec2:MetadataHttpTokens": request["MetadataOptions"]["HttpTokens"],
        "ec2:InstanceProfile": where.profile_arn,
    }
    volume_context = _request_tags(request, "volume")
    calls = [
        Request("ec2:RunInstances", f"{ec2}:instance/*", instance_context),
        Request("ec2:RunInstances", f"{ec2}:volume/*", volume_context),
        Request("ec2:RunInstances", f"{ec2}:network-interface/*", {
            **in_vpc, "ec2:Subnet": subnet_arn,
            "ec2:AssociatePublicIpAddress": str(interface.get("AssociatePublicIpAddress", False)).lower(),
        }),
        Request("ec2:RunInstances", subnet_arn, in_vpc),
        *[Request("ec2:RunInstances", f"{ec2}:security-group/{group}", in_vpc) for group in interface["Groups"]],
        Request("ec2:RunInstances", f"arn:aws:ec2:{where.region}::image/{request['ImageId']}",
                {"ec2:Owner": where.ami_owner}),
        Request("ec2:RunInstances", f"arn:aws:ec2:{where.region}::snapshot/snap-0ami", {"ec2:Owner": where.ami_owner}),
        Request("ec2:CreateTags", f"{ec2}:instance/*", {**instance_context, "ec2:CreateAction": "RunInstances"}),
        Request("ec2:CreateTags", f"{ec2}:volume/*", {**volume_context, "ec2:CreateAction": "RunInstances"}),
        Request("iam:PassRole", where.role_arn, {"iam:PassedToService": "ec2.amazonaws.com"}),
    ]
    for mapping in request["BlockDeviceMappings"]:
        snapshot = mapping.get("Ebs", {}).get("SnapshotId")
        if snapshot:  # an incremental build's base: our own snapshot
            calls.append(Request("ec2:RunInstances", f"arn:aws:ec2:{where.region}::snapshot/{snapshot}",
                                 {"ec2:Owner": where.account}))
    return calls


def mutating_actions(actions: set[str]) -> set[str]:
    """The actions that change something (everything but Describe*, Get*, List*)."""
    return {action for action in actions if not action.split(":", 1)[1].startswith(("Describe", "Get", "List"))}


def node_calls(action: str, node_tags: dict[str, str], where: Account,
               launch_context: dict[str, Any]) -> list[Request]:
    """`action` on an EKS node's instance and volume tagged `node_tags`: as they are, and with the call
    asking to add role=builder. RunInstances: a new instance and volume tagged like a node, otherwise
    the builder's own request (`launch_context` without its tags)."""
    ec2 = f"arn:aws:ec2:{where.region}:{where.account}"
    on_resource = {f"{prefix}/{key}": value for key, value in node_tags.items()
                   for prefix in ("aws:ResourceTag", "ssm:resourceTag")}
    made_builder = {"aws:RequestTag/ml-cache:role": "builder", "aws:TagKeys": ["ml-cache:role"]}
    if action == "ec2:RunInstances":
        untagged = {key: value for key, value in launch_context.items()
                    if not key.startswith(("aws:RequestTag/", "aws:TagKeys"))}
        as_node = {**{f"aws:RequestTag/{key}": value for key, value in node_tags.items()},
                   "aws:TagKeys": sorted(node_tags)}
        contexts = [{**untagged, **as_node}]
    else:
        contexts = [on_resource, {**on_resource, **made_builder}]
    return [Request(action, arn, context) for arn in (f"{ec2}:instance/i-0node", f"{ec2}:volume/vol-0node")
            for context in contexts]
