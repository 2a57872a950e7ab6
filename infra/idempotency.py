"""The Powertools idempotency table (F01, F10): one item per business key, expiring by TTL."""

from __future__ import annotations

from aws_cdk import aws_dynamodb as dynamodb
from constructs import Construct

from infra.config import StageConfig

PARTITION_KEY = "id"  # Powertools DynamoDBPersistenceLayer default key_attr
TTL_ATTRIBUTE = "expiration"  # Powertools default expiry_attr


class IdempotencyTable(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, config: StageConfig) -> None:
        super().__init__(scope, construct_id)
        self.table = dynamodb.Table(
            self,
            "Table",
            partition_key=dynamodb.Attribute(
                name=PARTITION_KEY, type=dynamodb.AttributeType.STRING
            ),
            time_to_live_attribute=TTL_ATTRIBUTE,
            # F05: on-demand; no capacity to exhaust under a retry storm, and reserved
            # concurrency upstream bounds the cost.
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            encryption=dynamodb.TableEncryption.AWS_MANAGED,
            removal_policy=config.removal_policy,
        )
