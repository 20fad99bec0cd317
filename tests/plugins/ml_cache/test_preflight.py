"""The builder's read-only preflight against a moto server's EC2 (us-west-2: zones a-d, its instance types)."""

import boto3
import pytest
from botocore.stub import Stubber

from ml_cache.images import InvalidInputs
from ml_cache.preflight import check_availability_zones, check_instance_types

REGION = "us-west-2"


@pytest.fixture
def ec2(moto_endpoint):
    return boto3.client("ec2", region_name=REGION, endpoint_url=moto_endpoint)


def test_zones_of_the_region_pass(ec2):
    check_availability_zones(ec2, ["us-west-2a", "us-west-2d"], REGION)


def test_a_zone_the_region_does_not_have_is_refused_naming_it(ec2):
    with pytest.raises(InvalidInputs, match=r"fsr_availability_zones \['us-west-2z'\] do not exist in us-west-2 "
                                            r"\(it has \['us-west-2a', 'us-west-2b', 'us-west-2c', 'us-west-2d'\]\)"):
        check_availability_zones(ec2, ["us-west-2a", "us-west-2z"], REGION)


def test_a_zone_that_is_not_available_is_refused_with_its_state():
    ec2 = boto3.client("ec2", region_name=REGION)
    with Stubber(ec2) as stub:  # moto reports every zone available: EC2's answer for an impaired one
        stub.add_response("describe_availability_zones", {"AvailabilityZones": [
            {"ZoneName": "us-west-2a", "State": "available"}, {"ZoneName": "us-west-2b", "State": "impaired"}]})
        with pytest.raises(InvalidInputs, match=r"\['us-west-2b'\] are not available: \{'us-west-2b': 'impaired'\}"):
            check_availability_zones(ec2, ["us-west-2a", "us-west-2b"], REGION)


def test_instance_types_of_the_architecture_pass(ec2):
    check_instance_types(ec2, ["c6i.2xlarge", "m6i.2xlarge", "c5.2xlarge"], "x86_64", REGION)
    check_instance_types(ec2, ["c7g.2xlarge", "m6gd.large"], "arm64", REGION)


def test_an_instance_type_not_offered_is_refused_naming_it(ec2):
    with pytest.raises(InvalidInputs, match=r"instance_types \['c6i\.9xhuge'\] are not offered in us-west-2"):
        check_instance_types(ec2, ["c6i.2xlarge", "c6i.9xhuge"], "x86_64", REGION)


def test_an_instance_type_of_another_architecture_is_refused_with_what_ec2_says(ec2):
    with pytest.raises(InvalidInputs, match=r"instance_types \['c7g\.2xlarge'\] do not run x86_64 \(EC2 says "
                                            r"\{'c7g\.2xlarge': \['arm64'\]\}\)"):
        check_instance_types(ec2, ["c6i.2xlarge", "c7g.2xlarge"], "x86_64", REGION)
