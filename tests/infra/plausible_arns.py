"""Resolve a synthesized template's intrinsics to plausible literals, for offline linters.

parliament and asl-validator read plain JSON: a policy Resource of ``{"Fn::GetAtt": [...]}``
or a state's ``Resource`` spliced in by ``Fn::Join`` means nothing to them. Each Ref and
GetAtt becomes the shape AWS would return for that resource type (an ARN, a queue URL, a
name), so the linters check the ARN formats and action/resource pairs that deploy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from infra.service import this_service

REGION: Final = "eu-west-1"
ACCOUNT: Final = "111111111111"

PSEUDO: Final[Mapping[str, Any]] = {
    "AWS::Partition": "aws",
    "AWS::Region": REGION,
    "AWS::AccountId": ACCOUNT,
    "AWS::URLSuffix": "amazonaws.com",
    "AWS::StackName": this_service().stack_name,
    "AWS::NoValue": None,
}


def _lambda_arn(name: str) -> str:
    return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"


# What Ref returns per resource type (CloudFormation's "Return values" of each type).
_REF: Final[Mapping[str, Callable[[str], str]]] = {
    "AWS::Lambda::Function": lambda lid: lid,
    "AWS::Lambda::Alias": lambda lid: f"{_lambda_arn(lid)}:live",
    "AWS::Lambda::Version": lambda lid: f"{_lambda_arn(lid)}:1",
    "AWS::SQS::Queue": lambda lid: f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{lid}",
    "AWS::SNS::Topic": lambda lid: f"arn:aws:sns:{REGION}:{ACCOUNT}:{lid}",
    "AWS::SecretsManager::Secret": (
        lambda lid: f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{lid}-AbCdEf"
    ),
    "AWS::SecretsManager::SecretTargetAttachment": (
        lambda lid: f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{lid}-AbCdEf"
    ),
    "AWS::StepFunctions::StateMachine": (
        lambda lid: f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:{lid}"
    ),
    "AWS::KMS::Key": lambda _lid: "1234abcd-12ab-34cd-56ef-1234567890ab",
    "AWS::EC2::SecurityGroup": lambda _lid: "sg-0123456789abcdef0",
}

# What GetAtt returns, per (type, attribute).
_ATTRIBUTES: Final[Mapping[tuple[str, str], Callable[[str], str]]] = {
    ("AWS::Lambda::Function", "Arn"): _lambda_arn,
    ("AWS::SQS::Queue", "Arn"): lambda lid: f"arn:aws:sqs:{REGION}:{ACCOUNT}:{lid}",
    ("AWS::SQS::Queue", "QueueName"): lambda lid: lid,
    ("AWS::DynamoDB::Table", "Arn"): (
        lambda lid: f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{lid}"
    ),
    ("AWS::Logs::LogGroup", "Arn"): (
        lambda lid: f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{lid}:*"
    ),
    ("AWS::RDS::DBProxy", "DBProxyArn"): (
        lambda _lid: f"arn:aws:rds:{REGION}:{ACCOUNT}:db-proxy:prx-0123456789abcdef0"
    ),
    ("AWS::RDS::DBInstance", "DbiResourceId"): lambda _lid: "db-ABCDEFGHIJKLMNOPQRSTUVWXY0",
    ("AWS::EC2::VPC", "DefaultSecurityGroup"): lambda _lid: "sg-0fedcba9876543210",
    ("AWS::KMS::Key", "Arn"): (
        lambda _lid: f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    ),
    ("AWS::SNS::Topic", "TopicArn"): lambda lid: f"arn:aws:sns:{REGION}:{ACCOUNT}:{lid}",
    ("AWS::IAM::Role", "Arn"): lambda lid: f"arn:aws:iam::{ACCOUNT}:role/{lid}",
    ("AWS::Cognito::UserPool", "Arn"): (
        lambda _lid: f"arn:aws:cognito-idp:{REGION}:{ACCOUNT}:userpool/{REGION}_AbCdEfGhI"
    ),
}


class UnresolvedIntrinsicError(ValueError):
    """A Ref/GetAtt this module has no shape for: add one rather than guess."""


class PlausibleResolver:
    def __init__(self, template: Mapping[str, Any]) -> None:
        self.resources: Mapping[str, Any] = template.get("Resources", {})

    def _type(self, logical_id: str) -> str:
        return str(self.resources[logical_id]["Type"])

    def _ref(self, name: str) -> Any:
        if name in PSEUDO:
            return PSEUDO[name]
        if name not in self.resources:
            raise UnresolvedIntrinsicError(f"Ref to parameter {name}")
        shape = _REF.get(self._type(name))
        # Types whose Ref is their physical name (CodeDeploy, IAM role, table, ...).
        return shape(name) if shape else name

    def _get_att(self, logical_id: str, attribute: str) -> str:
        kind = self._type(logical_id)
        shape = _ATTRIBUTES.get((kind, attribute))
        if shape is None:
            raise UnresolvedIntrinsicError(f"GetAtt {logical_id}.{attribute} ({kind})")
        return shape(logical_id)

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.resolve(item) for item in value]
        if not isinstance(value, Mapping):
            return value
        if len(value) == 1:
            ((key, argument),) = value.items()
            if key == "Ref":
                return self._ref(str(argument))
            if key == "Fn::GetAtt":
                logical_id, attribute = (
                    argument if isinstance(argument, list) else str(argument).split(".", 1)
                )
                return self._get_att(str(logical_id), str(attribute))
            if key == "Fn::Join":
                delimiter, items = argument
                return str(delimiter).join(str(item) for item in self.resolve(items))
            if key == "Fn::Split":
                delimiter, text = argument
                return str(self.resolve(text)).split(str(delimiter))
            if key == "Fn::Select":
                index, items = argument
                return self.resolve(items)[int(self.resolve(index))]
            if key.startswith("Fn::"):
                raise UnresolvedIntrinsicError(key)
        return {key: self.resolve(item) for key, item in value.items()}
