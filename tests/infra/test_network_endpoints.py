"""Where a stage pays for interface endpoints, no AWS call of a function in the VPC depends on
the NAT (issue 10, finding 9: Intake runs in the VPC and starts the saga; prod had no Step
Functions endpoint, so every saga start went through the NAT it pays endpoints to avoid)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from tests.catalogue.templates import our_functions
from tests.infra.conftest import Synthesized

# Granted services that need no endpoint: ENI management and X-Ray go through the Lambda
# service; rds-db:connect is an IAM token signed locally; the payment provider is the
# internet (the NAT's one job).
NO_ENDPOINT_NEEDED = {"ec2", "xray", "logs", "rds-db"}


def granted_services(stack: Synthesized, role_id: str) -> Iterator[str]:
    for policy in stack.resources("AWS::IAM::Policy").values():
        props = policy["Properties"]
        if {"Ref": role_id} not in props.get("Roles", []):
            continue
        for statement in props["PolicyDocument"]["Statement"]:
            actions = statement["Action"]
            for action in [actions] if isinstance(actions, str) else actions:
                yield action.split(":", 1)[0]


def endpoint_services(stack: Synthesized) -> set[str]:
    found = set()
    for endpoint in stack.resources("AWS::EC2::VPCEndpoint").values():
        service: Any = endpoint["Properties"]["ServiceName"]
        if isinstance(service, dict):  # Fn::Join [".", ["com.amazonaws", {Ref: Region}, "x"]]
            service = service["Fn::Join"][1][-1]
        found.add(str(service).rsplit(".", 1)[-1])
    return found


def test_every_service_a_vpc_function_calls_has_an_endpoint_in_prod(
    synthesized: dict[str, Synthesized],
) -> None:
    """Fails if: a VPC function is granted an AWS API (here Intake's states:StartExecution)
    for which prod has no endpoint."""
    prod = synthesized["prod"]
    assert prod.config.network.interface_endpoints
    endpoints = endpoint_services(prod)
    missing = {}
    for name, (_, props) in our_functions(prod).items():
        if "VpcConfig" not in props:
            continue
        role = props["Role"]["Fn::GetAtt"][0]
        needed = set(granted_services(prod, role)) - NO_ENDPOINT_NEEDED
        if lacking := needed - endpoints:
            missing[name] = sorted(lacking)

    assert "Intake" in {n for n, (_, p) in our_functions(prod).items() if "VpcConfig" in p}
    assert missing == {}
