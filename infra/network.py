"""The VPC: functions in private subnets with egress, the database in isolated subnets."""

from __future__ import annotations

from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.config import StageConfig

FUNCTION_SUBNETS = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS)
DATABASE_SUBNETS = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED)


class Network(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, config: StageConfig) -> None:
        super().__init__(scope, construct_id)
        net = config.network
        flow_log_group = logs.LogGroup(
            self,
            "FlowLogs",
            retention=config.log_retention,
            removal_policy=config.removal_policy,
        )
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            ip_addresses=ec2.IpAddresses.cidr(net.cidr),
            max_azs=net.max_azs,
            nat_gateways=net.nat_gateways,
            subnet_configuration=[
                ec2.SubnetConfiguration(
                    name="public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24
                ),
                # Egress: TakePayment/RefundPayment call the payment provider's public HTTPS API.
                ec2.SubnetConfiguration(
                    name="functions",
                    subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS,
                    cidr_mask=20,
                ),
                # No route out at all: the database is reachable only from inside the VPC.
                ec2.SubnetConfiguration(
                    name="database",
                    subnet_type=ec2.SubnetType.PRIVATE_ISOLATED,
                    cidr_mask=24,
                ),
            ],
            flow_logs={
                "All": ec2.FlowLogOptions(
                    destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_log_group),
                    # Rejected flows are what an incident or audit needs; ALL would multiply
                    # the log volume (and cost) with the NAT's accepted traffic.
                    traffic_type=ec2.FlowLogTrafficType.REJECT,
                )
            },
        )
        # Free, and keeps idempotency traffic (every invocation) off the NAT.
        self.vpc.add_gateway_endpoint(
            "DynamoDb",
            service=ec2.GatewayVpcEndpointAwsService.DYNAMODB,
            subnets=[FUNCTION_SUBNETS],
        )
        if net.interface_endpoints:
            # Every AWS API a VPC function calls besides DynamoDB (the gateway endpoint above),
            # so none of them depends on the NAT (issue 10, finding 9): Api and Intake send to
            # SQS; Intake also writes the order row (hence in the VPC) and starts the saga
            # (Step Functions); the payment functions and Migrate read secrets. RDS IAM tokens
            # are signed locally; logs, metrics (EMF) and traces leave through the Lambda
            # service, not the function's ENI. tests/infra/test_network_endpoints.py checks the
            # list against the roles' grants.
            for name, service in (
                ("Sqs", ec2.InterfaceVpcEndpointAwsService.SQS),
                ("SecretsManager", ec2.InterfaceVpcEndpointAwsService.SECRETS_MANAGER),
                ("StepFunctions", ec2.InterfaceVpcEndpointAwsService.STEP_FUNCTIONS),
            ):
                endpoint = self.vpc.add_interface_endpoint(
                    name,
                    service=service,
                    subnets=FUNCTION_SUBNETS,
                    private_dns_enabled=True,
                    open=False,
                )
                # HTTPS from the VPC's literal CIDR: the default rule references the CIDR via
                # GetAtt, which cdk-nag (EC23) cannot evaluate.
                endpoint.connections.allow_default_port_from(
                    ec2.Peer.ipv4(net.cidr), "HTTPS from inside the VPC"
                )
