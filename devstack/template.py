"""The synthesized CloudFormation template, read the way CloudFormation reads it.

The devstack builds its local AWS *from* ``cdk.out/<stack>.template.json`` so the local run
cannot drift from what deploys: queue redrive, timeouts, environment variables, the ASL and the
API's request model all come from here. Two parts:

- ``CfnTemplate``: typed accessors over the resources the devstack recreates.
- ``Resolver``: a small intrinsic-function evaluator (``Ref``, ``Fn::GetAtt``, ``Fn::Join``,
  ``Fn::Sub``, ``Fn::Select``, ``Fn::Split``, ``Fn::If``, ``Fn::FindInMap``, ``Fn::Base64``)
  over a mapping logical id -> *local* physical values (moto's queue URLs, ARNs, ...).

It deliberately supports only what CDK emits for this stack; anything else raises
``TemplateError`` naming the construct, rather than guessing a value.
"""

from __future__ import annotations

import base64
import json
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from infra.service import this_service

LOCAL_ACCOUNT_ID: Final = "123456789012"
"""moto's default account: every local ARN carries it."""

LAMBDA_DEFAULT_TIMEOUT_S: Final = 3
LAMBDA_DEFAULT_MEMORY_MB: Final = 128
SQS_DEFAULT_VISIBILITY_S: Final = 30
SQS_DEFAULT_RETENTION_S: Final = 345_600
ESM_DEFAULT_BATCH_SIZE: Final = 10

_NO_VALUE: Final = object()
"""``Ref: AWS::NoValue`` (or a false ``Fn::If`` branch using it): the key is dropped."""

_SUB_VAR = re.compile(r"\$\{([^}]+)\}")


class TemplateError(ValueError):
    """The template uses something the local resolver does not (or cannot) support."""


@dataclass(frozen=True)
class Physical:
    """Local physical values of one resource: what ``Ref`` and ``Fn::GetAtt`` return."""

    ref: str
    attributes: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Resource:
    logical_id: str
    type: str
    properties: Mapping[str, Any]
    metadata: Mapping[str, Any]

    @property
    def cdk_path(self) -> str | None:
        """``<stack>/Functions/Api/Resource``: the readable name of a CDK construct."""
        path = self.metadata.get("aws:cdk:path")
        return path if isinstance(path, str) else None


# --- typed views --------------------------------------------------------------------------


@dataclass(frozen=True)
class FunctionSpec:
    logical_id: str
    handler: str
    runtime: str | None
    timeout_s: int
    memory_mb: int
    environment: Mapping[str, Any]  # unresolved values
    function_name: Any  # unresolved FunctionName property (CDK usually leaves it out)
    reserved_concurrency: int | None
    cdk_path: str | None


@dataclass(frozen=True)
class AliasSpec:
    logical_id: str
    name: str
    function_logical_id: str


@dataclass(frozen=True)
class RedriveSpec:
    dead_letter_queue_logical_id: str
    max_receive_count: int


@dataclass(frozen=True)
class QueueSpec:
    logical_id: str
    queue_name: Any  # unresolved QueueName, usually absent
    fifo: bool
    visibility_timeout_s: int
    message_retention_s: int
    delay_s: int
    receive_wait_s: int
    maximum_message_size: int | None
    redrive: RedriveSpec | None
    sqs_managed_sse: bool
    cdk_path: str | None


@dataclass(frozen=True)
class EventSourceMappingSpec:
    logical_id: str
    function_logical_id: str  # the Function, even when the mapping targets its alias
    target_logical_id: str  # the Function or Alias the mapping invokes
    queue_logical_id: str
    batch_size: int
    maximum_batching_window_s: int
    report_batch_item_failures: bool
    maximum_concurrency: int | None
    enabled: bool


@dataclass(frozen=True)
class ApiMethodSpec:
    logical_id: str
    http_method: str
    path: str  # "/orders", "/orders/{order_id}"
    authorization_type: str
    authorizer_logical_id: str | None
    required_headers: tuple[str, ...]
    required_querystrings: tuple[str, ...]
    validate_body: bool
    validate_parameters: bool
    request_models: Mapping[str, str]  # content type -> Model logical id
    integration_type: str | None
    integration_target_logical_id: str | None  # Function or Alias behind an AWS_PROXY


@dataclass(frozen=True)
class GatewayResponseSpec:
    response_type: str
    status_code: int | None
    templates: Mapping[str, str]
    headers: Mapping[str, str]  # static values only ('quoted' in the template)


# --- template -----------------------------------------------------------------------------


class CfnTemplate:
    """One synthesized stack template."""

    def __init__(
        self,
        body: Mapping[str, Any],
        *,
        stack_name: str,
        region: str = "us-east-1",
        account_id: str = LOCAL_ACCOUNT_ID,
    ) -> None:
        self.body = body
        self.stack_name = stack_name
        self.region = region
        self.account_id = account_id
        raw = body.get("Resources", {})
        self._resources = {
            lid: Resource(lid, r["Type"], r.get("Properties", {}), r.get("Metadata", {}))
            for lid, r in raw.items()
        }

    @classmethod
    def load(
        cls,
        cdk_out: Path | str = "cdk.out",
        stack_name: str | None = None,
        *,
        region: str | None = None,
    ) -> CfnTemplate:
        """Read ``<cdk_out>/<stack_name>.template.json``.

        The region comes from the cloud assembly's manifest when CDK recorded one (an
        environment-agnostic stack has ``unknown-region``; then us-east-1, like the CLI).
        """
        out = Path(cdk_out)
        stack_name = stack_name or this_service().stack("dev")
        path = out / f"{stack_name}.template.json"
        if not path.is_file():
            raise TemplateError(f"{path} not found: run `npx cdk synth -q -c stage=dev` first")
        text = path.read_text(encoding="utf-8")
        region = region or _manifest_region(out, stack_name) or _literal_region(text)
        # The stage's account (service.yml) is baked into the template's ARNs; the local
        # AWS serves that account (MOTO_ACCOUNT_ID), so every ARN matches.
        account = _manifest_account(out, stack_name) or LOCAL_ACCOUNT_ID
        return cls(json.loads(text), stack_name=stack_name, region=region, account_id=account)

    # generic access

    def resource(self, logical_id: str) -> Resource:
        try:
            return self._resources[logical_id]
        except KeyError:
            raise TemplateError(f"no resource {logical_id!r} in {self.stack_name}") from None

    def has_resource(self, logical_id: str) -> bool:
        return logical_id in self._resources

    def resources(self, type_: str | None = None) -> Iterator[Resource]:
        return (r for r in self._resources.values() if type_ is None or r.type == type_)

    def local_name(self, logical_id: str, max_len: int = 64) -> str:
        """A deterministic physical name for a resource whose template leaves it to
        CloudFormation (which would append a random suffix)."""
        return f"{self.stack_name}-{logical_id}"[:max_len]

    # Lambda

    def functions(self) -> list[FunctionSpec]:
        specs = []
        for r in self.resources("AWS::Lambda::Function"):
            p = r.properties
            env = p.get("Environment", {}).get("Variables", {})
            specs.append(
                FunctionSpec(
                    logical_id=r.logical_id,
                    handler=str(p.get("Handler", "")),
                    runtime=p.get("Runtime"),
                    timeout_s=int(p.get("Timeout", LAMBDA_DEFAULT_TIMEOUT_S)),
                    memory_mb=int(p.get("MemorySize", LAMBDA_DEFAULT_MEMORY_MB)),
                    environment=env,
                    function_name=p.get("FunctionName"),
                    reserved_concurrency=_opt_int(p.get("ReservedConcurrentExecutions")),
                    cdk_path=r.cdk_path,
                )
            )
        return specs

    def function(self, logical_id: str) -> FunctionSpec:
        for spec in self.functions():
            if spec.logical_id == logical_id:
                return spec
        raise TemplateError(f"{logical_id!r} is not an AWS::Lambda::Function")

    def function_by_handler(self, handler: str) -> FunctionSpec:
        matches = [f for f in self.functions() if f.handler == handler]
        if len(matches) != 1:
            raise TemplateError(f"expected one function with handler {handler!r}, got {matches}")
        return matches[0]

    def aliases(self) -> list[AliasSpec]:
        out = []
        for r in self.resources("AWS::Lambda::Alias"):
            fn = self.referenced_id(r.properties.get("FunctionName"))
            if fn is None:
                raise TemplateError(f"alias {r.logical_id} does not reference a function")
            out.append(AliasSpec(r.logical_id, str(r.properties["Name"]), fn))
        return out

    def function_of(self, logical_id: str) -> str:
        """The Function behind a Function, Alias or Version logical id."""
        r = self.resource(logical_id)
        if r.type == "AWS::Lambda::Function":
            return logical_id
        if r.type in {"AWS::Lambda::Alias", "AWS::Lambda::Version"}:
            fn = self.referenced_id(r.properties.get("FunctionName"))
            if fn is not None:
                return self.function_of(fn)
        raise TemplateError(f"{logical_id} ({r.type}) is not a Lambda function, alias or version")

    # SQS

    def queues(self) -> list[QueueSpec]:
        specs = []
        for r in self.resources("AWS::SQS::Queue"):
            p = r.properties
            redrive = None
            if "RedrivePolicy" in p:
                rp = p["RedrivePolicy"]
                dlq = self.referenced_id(rp.get("deadLetterTargetArn"))
                if dlq is None:
                    raise TemplateError(f"{r.logical_id}: DLQ must be a queue in this stack")
                redrive = RedriveSpec(dlq, int(rp["maxReceiveCount"]))
            specs.append(
                QueueSpec(
                    logical_id=r.logical_id,
                    queue_name=p.get("QueueName"),
                    fifo=bool(p.get("FifoQueue", False)),
                    visibility_timeout_s=int(p.get("VisibilityTimeout", SQS_DEFAULT_VISIBILITY_S)),
                    message_retention_s=int(
                        p.get("MessageRetentionPeriod", SQS_DEFAULT_RETENTION_S)
                    ),
                    delay_s=int(p.get("DelaySeconds", 0)),
                    receive_wait_s=int(p.get("ReceiveMessageWaitTimeSeconds", 0)),
                    maximum_message_size=_opt_int(p.get("MaximumMessageSize")),
                    redrive=redrive,
                    sqs_managed_sse=bool(p.get("SqsManagedSseEnabled", False)),
                    cdk_path=r.cdk_path,
                )
            )
        return specs

    def queue(self, logical_id: str) -> QueueSpec:
        for q in self.queues():
            if q.logical_id == logical_id:
                return q
        raise TemplateError(f"{logical_id!r} is not an AWS::SQS::Queue")

    def event_source_mappings(self) -> list[EventSourceMappingSpec]:
        specs = []
        for r in self.resources("AWS::Lambda::EventSourceMapping"):
            p = r.properties
            # CDK may name the alias as Join(Select(6, Split(":", Ref alias)), ":live").
            target = next(
                (
                    lid
                    for lid in self.referenced_ids(p.get("FunctionName"))
                    if self.resource(lid).type in {"AWS::Lambda::Function", "AWS::Lambda::Alias"}
                ),
                None,
            )
            queue = self.referenced_id(p.get("EventSourceArn"))
            if target is None or queue is None:
                raise TemplateError(f"{r.logical_id}: function and source must be in this stack")
            if self.resource(queue).type != "AWS::SQS::Queue":
                continue  # streams are not part of the local run
            scaling = p.get("ScalingConfig", {})
            specs.append(
                EventSourceMappingSpec(
                    logical_id=r.logical_id,
                    function_logical_id=self.function_of(target),
                    target_logical_id=target,
                    queue_logical_id=queue,
                    batch_size=int(p.get("BatchSize", ESM_DEFAULT_BATCH_SIZE)),
                    maximum_batching_window_s=int(p.get("MaximumBatchingWindowInSeconds", 0)),
                    report_batch_item_failures="ReportBatchItemFailures"
                    in p.get("FunctionResponseTypes", []),
                    maximum_concurrency=_opt_int(scaling.get("MaximumConcurrency")),
                    enabled=bool(p.get("Enabled", True)),
                )
            )
        return specs

    # API Gateway (REST)

    def api_stage_name(self) -> str:
        stages = list(self.resources("AWS::ApiGateway::Stage"))
        if len(stages) != 1:
            raise TemplateError(f"expected one AWS::ApiGateway::Stage, found {len(stages)}")
        return str(stages[0].properties["StageName"])

    def api_resource_path(self, resource_value: Any) -> str:
        """The path of a method's ``ResourceId`` (``GetAtt RestApi.RootResourceId`` or a
        ``Ref`` to an AWS::ApiGateway::Resource chain)."""
        if isinstance(resource_value, Mapping) and "Fn::GetAtt" in resource_value:
            return "/"  # RootResourceId
        lid = self.referenced_id(resource_value)
        if lid is None:
            raise TemplateError(f"cannot follow API resource {resource_value!r}")
        r = self.resource(lid)
        parent = self.api_resource_path(r.properties["ParentId"])
        return parent.rstrip("/") + "/" + str(r.properties["PathPart"])

    def api_methods(self) -> list[ApiMethodSpec]:
        validators = {
            r.logical_id: r.properties for r in self.resources("AWS::ApiGateway::RequestValidator")
        }
        specs = []
        for r in self.resources("AWS::ApiGateway::Method"):
            p = r.properties
            params = p.get("RequestParameters", {})
            validator = validators.get(self.referenced_id(p.get("RequestValidatorId")) or "", {})
            integration = p.get("Integration", {})
            target = None
            for ref_id in self.referenced_ids(integration.get("Uri")):
                if self.resource(ref_id).type in {"AWS::Lambda::Function", "AWS::Lambda::Alias"}:
                    target = ref_id
            models = {
                ct: model
                for ct, ref in p.get("RequestModels", {}).items()
                if (model := self.referenced_id(ref)) is not None
            }
            specs.append(
                ApiMethodSpec(
                    logical_id=r.logical_id,
                    http_method=str(p["HttpMethod"]).upper(),
                    path=self.api_resource_path(p["ResourceId"]),
                    authorization_type=str(p.get("AuthorizationType", "NONE")),
                    authorizer_logical_id=self.referenced_id(p.get("AuthorizerId")),
                    required_headers=_required_params(params, "header"),
                    required_querystrings=_required_params(params, "querystring"),
                    validate_body=bool(validator.get("ValidateRequestBody", False)),
                    validate_parameters=bool(validator.get("ValidateRequestParameters", False)),
                    request_models=models,
                    integration_type=integration.get("Type"),
                    integration_target_logical_id=target,
                )
            )
        return specs

    def api_model_schema(self, model_logical_id: str) -> dict[str, Any]:
        schema = self.resource(model_logical_id).properties["Schema"]
        # CFN accepts the schema as an object or as a JSON string.
        return dict(json.loads(schema) if isinstance(schema, str) else schema)

    def gateway_responses(self) -> dict[str, GatewayResponseSpec]:
        out = {}
        for r in self.resources("AWS::ApiGateway::GatewayResponse"):
            p = r.properties
            headers = {
                k.removeprefix("gatewayresponse.header."): v.strip("'")
                for k, v in p.get("ResponseParameters", {}).items()
                if k.startswith("gatewayresponse.header.") and isinstance(v, str)
            }
            out[str(p["ResponseType"])] = GatewayResponseSpec(
                response_type=str(p["ResponseType"]),
                status_code=_opt_int(p.get("StatusCode")),
                templates=dict(p.get("ResponseTemplates", {})),
                headers=headers,
            )
        return out

    # references

    def referenced_id(self, value: Any) -> str | None:
        """The logical id a ``Ref`` / ``Fn::GetAtt`` value points at (None for literals)."""
        if isinstance(value, Mapping) and len(value) == 1:
            if "Ref" in value and value["Ref"] in self._resources:
                return str(value["Ref"])
            if "Fn::GetAtt" in value:
                target = value["Fn::GetAtt"]
                lid = target[0] if isinstance(target, list) else str(target).split(".", 1)[0]
                return str(lid) if lid in self._resources else None
        return None

    def referenced_ids(self, value: Any) -> list[str]:
        """Every resource a (possibly nested) value refers to, in order."""
        found: list[str] = []
        if isinstance(value, Mapping):
            direct = self.referenced_id(value)
            if direct is not None:
                return [direct]
            if "Fn::Sub" in value:
                sub = value["Fn::Sub"]
                text = sub if isinstance(sub, str) else sub[0]
                for var in _SUB_VAR.findall(text):
                    if var.split(".", 1)[0] in self._resources:
                        found.append(var.split(".", 1)[0])
            for v in value.values():
                found.extend(self.referenced_ids(v))
        elif isinstance(value, list):
            for v in value:
                found.extend(self.referenced_ids(v))
        return found


# --- resolver -----------------------------------------------------------------------------


class Resolver:
    """Evaluates intrinsic functions against local physical values."""

    def __init__(
        self,
        template: CfnTemplate,
        physical: Mapping[str, Physical] | None = None,
    ) -> None:
        self.template = template
        self.physical: dict[str, Physical] = dict(physical or {})

    def register(self, logical_id: str, ref: str, **attributes: str) -> None:
        self.physical[logical_id] = Physical(ref, attributes)

    @property
    def pseudo(self) -> dict[str, Any]:
        t = self.template
        return {
            "AWS::Region": t.region,
            "AWS::AccountId": t.account_id,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::StackName": t.stack_name,
            "AWS::StackId": (
                f"arn:aws:cloudformation:{t.region}:{t.account_id}:stack/{t.stack_name}/local"
            ),
            "AWS::NotificationARNs": [],
        }

    def resolve(self, value: Any) -> Any:
        out = self._resolve(value)
        if out is _NO_VALUE:
            return None
        return out

    def resolve_str(self, value: Any) -> str:
        out = self.resolve(value)
        if not isinstance(out, str | int | float) or isinstance(out, bool):
            raise TemplateError(f"{value!r} does not resolve to a scalar: {out!r}")
        return str(out)

    def _resolve(self, value: Any) -> Any:  # noqa: PLR0912 (one branch per intrinsic)
        if isinstance(value, list):
            return [v for v in (self._resolve(x) for x in value) if v is not _NO_VALUE]
        if not isinstance(value, Mapping):
            return value
        if len(value) == 1:
            ((key, arg),) = value.items()
            if key == "Ref":
                return self._ref(str(arg))
            if key == "Fn::GetAtt":
                lid, attr = arg if isinstance(arg, list) else str(arg).split(".", 1)
                return self._get_att(str(lid), str(self._resolve(attr)))
            if key == "Fn::Join":
                delim, items = arg
                return str(delim).join(_scalar(v) for v in self._resolve(items))
            if key == "Fn::Sub":
                return self._sub(arg)
            if key == "Fn::Select":
                index, items = arg
                return self._resolve(items)[int(self._resolve(index))]
            if key == "Fn::Split":
                delim, text = arg
                return str(self._resolve(text)).split(str(delim))
            if key == "Fn::If":
                cond, yes, no = arg
                return self._resolve(yes if self.condition(str(cond)) else no)
            if key == "Fn::FindInMap":
                name, top, second = (self._resolve(a) for a in arg)
                return self._resolve(self.template.body["Mappings"][name][top][second])
            if key == "Fn::Base64":
                return base64.b64encode(str(self._resolve(arg)).encode()).decode()
            if key == "Fn::GetAZs":
                return [f"{self.template.region}{z}" for z in "abc"]
            if key.startswith("Fn::") or key == "Condition":
                raise TemplateError(f"unsupported intrinsic {key} in {value!r}")
        return {k: r for k, v in value.items() if (r := self._resolve(v)) is not _NO_VALUE}

    def _ref(self, name: str) -> Any:
        if name == "AWS::NoValue":
            return _NO_VALUE
        pseudo = self.pseudo
        if name in pseudo:
            return pseudo[name]
        if name in self.physical:
            return self.physical[name].ref
        params = self.template.body.get("Parameters", {})
        if name in params and "Default" in params[name]:
            return params[name]["Default"]
        raise TemplateError(f"Ref {name}: no local value (the devstack does not create it)")

    def _get_att(self, logical_id: str, attribute: str) -> str:
        phys = self.physical.get(logical_id)
        if phys is None:
            raise TemplateError(f"GetAtt {logical_id}.{attribute}: the devstack does not create it")
        try:
            return phys.attributes[attribute]
        except KeyError:
            raise TemplateError(f"GetAtt {logical_id}.{attribute}: no local value") from None

    def _sub(self, arg: Any) -> str:
        text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])

        def repl(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):  # ${!Literal} is the escape for a literal ${Literal}
                return "${" + name[1:] + "}"
            if name in variables:
                return _scalar(self._resolve(variables[name]))
            if "." in name and not name.startswith("AWS::"):
                lid, attr = name.split(".", 1)
                return self._get_att(lid, attr)
            return _scalar(self._ref(name))

        return _SUB_VAR.sub(repl, str(text))

    def condition(self, name: str) -> bool:
        return bool(self._condition(self.template.body.get("Conditions", {})[name]))

    def _condition(self, expr: Any) -> Any:
        if isinstance(expr, Mapping) and len(expr) == 1:
            ((key, arg),) = expr.items()
            if key == "Fn::Equals":
                a, b = (self._condition(x) for x in arg)
                return a == b
            if key == "Fn::Not":
                return not self._condition(arg[0])
            if key == "Fn::And":
                return all(self._condition(x) for x in arg)
            if key == "Fn::Or":
                return any(self._condition(x) for x in arg)
            if key == "Condition":
                return self.condition(str(arg))
        return self._resolve(expr)


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise TemplateError(f"expected a scalar, got {value!r}")


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _required_params(params: Mapping[str, Any], location: str) -> tuple[str, ...]:
    prefix = f"method.request.{location}."
    return tuple(
        k.removeprefix(prefix)
        for k, required in params.items()
        if k.startswith(prefix) and required is True
    )


def _manifest_environment(cdk_out: Path, stack_name: str) -> tuple[str, str]:
    """(account, region) of ``aws://<account>/<region>`` in the cloud assembly's manifest."""
    manifest = cdk_out / "manifest.json"
    if manifest.is_file():
        artifacts = json.loads(manifest.read_text(encoding="utf-8")).get("artifacts", {})
        env = str(artifacts.get(stack_name, {}).get("environment", ""))
        if env.startswith("aws://") and env.count("/") == 3:
            account, region = env.removeprefix("aws://").split("/")
            return account, region
    return "", ""


def _manifest_region(cdk_out: Path, stack_name: str) -> str | None:
    region = _manifest_environment(cdk_out, stack_name)[1]
    return region if region and region != "unknown-region" else None


def _manifest_account(cdk_out: Path, stack_name: str) -> str | None:
    account = _manifest_environment(cdk_out, stack_name)[0]
    return account if account.isdigit() else None


def _literal_region(text: str) -> str:
    """The region an environment-specific stack baked into its ARNs; else us-east-1 (the
    CLI's default). Local ARNs must use it too, or the baked-in ones would not match."""
    found = Counter(re.findall(r"arn:aws:[a-z0-9-]+:([a-z]{2}(?:-[a-z]+)+-\d):", text))
    return found.most_common(1)[0][0] if found else "us-east-1"
