"""A local API Gateway (REST API, Lambda proxy) built from the template's method definitions.

It does what the deployed API does before the function runs, in the same order:
1. route ``/<stage>/<path>`` to a method (no route: 403 Missing Authentication Token);
2. payload limit (10 MB: 413);
3. Cognito user-pool authorizer: the ``Authorization`` header must be an Id token of the
   local pool, signed with moto's key, for an app client of the pool, unexpired (else 401);
4. request validator: required headers / query strings, then the body against the method's
   AWS::ApiGateway::Model (JSON schema draft 4), answered with the template's
   GatewayResponses (F11);
5. a real-format proxy event (claims in ``requestContext.authorizer.claims``) to the
   function's worker, whose ``{statusCode, headers, body}`` becomes the HTTP response
   (a function error or a malformed response: 502, as in AWS).
"""

from __future__ import annotations

import base64
import json
import re
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

import jsonschema
import jwt
from moto.utilities.utils import load_resource

from devstack.lambda_runtime import Invoker
from devstack.template import ApiMethodSpec, CfnTemplate

MAX_PAYLOAD_BYTES: Final = 10 * 1024 * 1024  # API Gateway REST payload quota

_DEFAULT_RESPONSES: Final = {
    # response type -> (status, message): API Gateway's built-in gateway responses
    "UNAUTHORIZED": (401, "Unauthorized"),
    "MISSING_AUTHENTICATION_TOKEN": (403, "Missing Authentication Token"),
    "BAD_REQUEST_PARAMETERS": (400, ""),
    "BAD_REQUEST_BODY": (400, "Invalid request body"),
    "REQUEST_TOO_LARGE": (413, "Request Too Long"),
    "DEFAULT_5XX": (502, "Internal server error"),
}
_ERROR_TYPES: Final = {
    401: "UnauthorizedException",
    403: "MissingAuthenticationTokenException",
    400: "BadRequestException",
    413: "RequestEntityTooLargeException",
}
_CONTEXT_VAR = re.compile(r"\$!?(?:\{context\.([\w.]+)\}|context\.([A-Za-z][\w.]*\w))")


@dataclass(frozen=True)
class Route:
    method: ApiMethodSpec
    pattern: re.Pattern[str]
    invoker: Invoker
    invoked_function_arn: str | None
    schemas: Mapping[str, dict[str, Any]]  # content type -> JSON schema


class GatewayError(Exception):
    """A request API Gateway answers itself, with the gateway response of this type."""

    def __init__(self, response_type: str, message: str, validation_error: str = "") -> None:
        super().__init__(message)
        self.response_type = response_type
        self.message = message
        self.validation_error = validation_error


class LocalApiGateway:
    """``with LocalApiGateway(...) as gw: urllib3.request("POST", gw.base_url + "/orders")``."""

    def __init__(
        self,
        template: CfnTemplate,
        *,
        invokers: Mapping[str, Invoker],  # function logical id -> its pool or worker
        invoked_arns: Mapping[str, str] | None = None,  # function logical id -> alias ARN
        user_pool_id: str | None,
        app_client_ids: list[str],
        host: str = "127.0.0.1",
        port: int = 0,
        say: Callable[[str], None] | None = None,
    ) -> None:
        self.template = template
        self.stage = template.api_stage_name()
        self.region = template.region
        self.user_pool_id = user_pool_id
        self.app_client_ids = app_client_ids
        self.responses = template.gateway_responses()
        self._jwks = jwt.PyJWKSet.from_dict(load_resource("cognitoidp/resources/jwks-public.json"))
        self._say = say or (lambda m: print(f"devstack: {m}", file=sys.stderr, flush=True))
        self.routes: list[Route] = []
        for method in template.api_methods():
            if method.integration_target_logical_id is None:
                continue
            fn = template.function_of(method.integration_target_logical_id)
            self.routes.append(
                Route(
                    method=method,
                    pattern=_path_pattern(method.path),
                    invoker=invokers[fn],
                    invoked_function_arn=(invoked_arns or {}).get(fn),
                    schemas={
                        ct: template.api_model_schema(model)
                        for ct, model in method.request_models.items()
                    },
                )
            )
        self._server = ThreadingHTTPServer((host, port), _handler_class(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/{self.stage}"

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self._say(f"API Gateway {self.base_url}: {len(self.routes)} methods from the template")

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> LocalApiGateway:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # request pipeline

    def handle(
        self,
        http_method: str,
        raw_path: str,
        headers: list[tuple[str, str]],
        body: bytes | None,
        source_ip: str,
    ) -> tuple[int, dict[str, str], bytes]:
        request_id = str(uuid.uuid4())
        url = urlsplit(raw_path)
        try:
            route, path_params = self._route(http_method, url.path)
            if body is None:
                raise GatewayError("REQUEST_TOO_LARGE", "Request Too Long")
            header_map = {k.lower(): v for k, v in headers}
            claims = self._authorize(route, header_map)
            query = parse_qs(url.query, keep_blank_values=True)
            self._validate(route, header_map, query, body)
        except GatewayError as err:
            return self._gateway_response(err, request_id)
        event = self._event(
            route,
            http_method,
            url.path,
            path_params,
            headers,
            query,
            body,
            claims,
            request_id,
            source_ip,
        )
        result = route.invoker.invoke(event, invoked_function_arn=route.invoked_function_arn)
        try:
            if result.errored:
                raise ValueError(result.payload)
            return _proxy_response(json.loads(result.payload), request_id)
        except (ValueError, TypeError, KeyError):
            return self._gateway_response(
                GatewayError("DEFAULT_5XX", "Internal server error"), request_id
            )

    def _route(self, http_method: str, path: str) -> tuple[Route, dict[str, str]]:
        prefix = f"/{self.stage}"
        if path == prefix or path.startswith(prefix + "/"):
            resource_path = path[len(prefix) :] or "/"
            for route in self.routes:
                if route.method.http_method not in {http_method, "ANY"}:
                    continue
                if (match := route.pattern.fullmatch(resource_path)) is not None:
                    return route, match.groupdict()
        raise GatewayError("MISSING_AUTHENTICATION_TOKEN", "Missing Authentication Token")

    def _authorize(self, route: Route, headers: Mapping[str, str]) -> dict[str, str] | None:
        if route.method.authorization_type != "COGNITO_USER_POOLS":
            return None
        # The REST API's Cognito authorizer takes the raw token (no "Bearer " prefix).
        token = headers.get("authorization", "")
        if not token or self.user_pool_id is None:
            raise GatewayError("UNAUTHORIZED", "Unauthorized")
        try:
            key = self._jwks[jwt.get_unverified_header(token).get("kid", "")]
            claims = jwt.decode(
                token,
                key=key,
                algorithms=["RS256"],
                audience=self.app_client_ids,
                issuer=f"https://cognito-idp.{self.region}.amazonaws.com/{self.user_pool_id}",
                options={"require": ["exp", "iat", "iss", "aud", "token_use"]},
            )
        except (jwt.PyJWTError, KeyError) as exc:
            raise GatewayError("UNAUTHORIZED", "Unauthorized") from exc
        if claims.get("token_use") != "id":
            raise GatewayError("UNAUTHORIZED", "Unauthorized")
        return {k: _claim_text(k, v) for k, v in claims.items()}

    def _validate(
        self,
        route: Route,
        headers: Mapping[str, str],
        query: Mapping[str, list[str]],
        body: bytes,
    ) -> None:
        method = route.method
        if method.validate_parameters:
            missing = [h for h in method.required_headers if h.lower() not in headers]
            if missing:
                message = f"Missing required request headers: [{', '.join(missing)}]"
                raise GatewayError("BAD_REQUEST_PARAMETERS", message, message)
            missing_q = [q for q in method.required_querystrings if q not in query]
            if missing_q:
                message = f"Missing required request parameters: [{', '.join(missing_q)}]"
                raise GatewayError("BAD_REQUEST_PARAMETERS", message, message)
        if not method.validate_body or not route.schemas:
            return
        content_type = headers.get("content-type", "application/json").split(";")[0].strip()
        schema = route.schemas.get(content_type) or route.schemas.get("$default")
        if schema is None:
            return
        try:
            document = json.loads(body or b"null")
        except ValueError as exc:
            raise GatewayError("BAD_REQUEST_BODY", "Invalid request body", f"[{exc}]") from exc
        validator = jsonschema.Draft4Validator(schema)
        errors = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
        if errors:
            detail = ", ".join(_describe(e) for e in errors)
            raise GatewayError("BAD_REQUEST_BODY", "Invalid request body", f"[{detail}]")

    def _gateway_response(
        self, err: GatewayError, request_id: str
    ) -> tuple[int, dict[str, str], bytes]:
        status, _ = _DEFAULT_RESPONSES.get(err.response_type, (500, ""))
        spec = self.responses.get(err.response_type)
        if spec is None and status < 500:
            spec = self.responses.get("DEFAULT_4XX")
        elif spec is None:
            spec = self.responses.get("DEFAULT_5XX")
        template = '{"message":$context.error.messageString}'
        headers = {"Content-Type": "application/json"}
        if spec is not None:
            status = spec.status_code or status
            template = spec.templates.get("application/json", template)
            headers.update(spec.headers)
        values = {
            "error.message": err.message,
            "error.messageString": json.dumps(err.message),
            "error.validationErrorString": _json_escape(err.validation_error),
            "error.responseType": err.response_type,
            "requestId": request_id,
            "extendedRequestId": request_id,
            "stage": self.stage,
        }
        body = _CONTEXT_VAR.sub(lambda m: values.get(m.group(1) or m.group(2), ""), template)
        headers["x-amzn-RequestId"] = request_id
        if status in _ERROR_TYPES:
            headers["x-amzn-ErrorType"] = _ERROR_TYPES[status]
        return status, headers, body.encode()

    def _event(
        self,
        route: Route,
        http_method: str,
        path: str,
        path_params: Mapping[str, str],
        headers: list[tuple[str, str]],
        query: Mapping[str, list[str]],
        body: bytes,
        claims: Mapping[str, str] | None,
        request_id: str,
        source_ip: str,
    ) -> dict[str, Any]:
        multi_headers: dict[str, list[str]] = {}
        for name, value in headers:
            multi_headers.setdefault(name, []).append(value)
        now = time.time()
        resource_path = path[len(self.stage) + 1 :] or "/"
        try:
            text, is_b64 = body.decode("utf-8"), False
        except UnicodeDecodeError:
            text, is_b64 = base64.b64encode(body).decode(), True
        context: dict[str, Any] = {
            "resourceId": route.method.logical_id[:6].lower(),
            "resourcePath": route.method.path,
            "httpMethod": http_method,
            "extendedRequestId": request_id,
            "requestTime": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "path": path,
            "accountId": self.template.account_id,
            "protocol": "HTTP/1.1",
            "stage": self.stage,
            "domainPrefix": "local",
            "requestTimeEpoch": int(now * 1000),
            "requestId": request_id,
            "identity": {
                "sourceIp": source_ip,
                "userAgent": multi_headers.get("User-Agent", [None])[0],
            },
            "domainName": "local",
            "apiId": "local",
        }
        if claims is not None:
            context["authorizer"] = {"claims": dict(claims)}
        return {
            "resource": route.method.path,
            "path": resource_path,
            "httpMethod": http_method,
            "headers": {k: v[-1] for k, v in multi_headers.items()} or None,
            "multiValueHeaders": multi_headers or None,
            "queryStringParameters": {k: v[-1] for k, v in query.items()} or None,
            "multiValueQueryStringParameters": dict(query) or None,
            "pathParameters": dict(path_params) or None,
            "stageVariables": None,
            "requestContext": context,
            "body": text if body else None,
            "isBase64Encoded": is_b64,
        }


def _proxy_response(response: Any, request_id: str) -> tuple[int, dict[str, str], bytes]:
    if not isinstance(response, Mapping) or not isinstance(response.get("statusCode"), int):
        raise ValueError("malformed Lambda proxy response")
    headers = {str(k): str(v) for k, v in (response.get("headers") or {}).items()}
    for name, values in (response.get("multiValueHeaders") or {}).items():
        headers[str(name)] = ", ".join(str(v) for v in values)
    headers.setdefault("Content-Type", "application/json")
    headers["x-amzn-RequestId"] = request_id
    body = response.get("body") or ""
    raw = base64.b64decode(body) if response.get("isBase64Encoded") else str(body).encode()
    return int(response["statusCode"]), headers, raw


def _path_pattern(path: str) -> re.Pattern[str]:
    parts = []
    for segment in path.strip("/").split("/"):
        if segment.startswith("{") and segment.endswith("+}"):
            parts.append(f"(?P<{segment[1:-2]}>.+)")
        elif segment.startswith("{") and segment.endswith("}"):
            parts.append(f"(?P<{segment[1:-1]}>[^/]+)")
        else:
            parts.append(re.escape(segment))
    return re.compile("/" + "/".join(p for p in parts if p))


def _claim_text(name: str, value: Any) -> str:
    # API Gateway hands claims over as strings, timestamps in Java's Date format.
    if name in {"exp", "iat"} and isinstance(value, int | float):
        return time.strftime("%a %b %d %H:%M:%S UTC %Y", time.gmtime(value))
    return value if isinstance(value, str) else json.dumps(value)


def _describe(error: jsonschema.ValidationError) -> str:
    where = "/".join(str(p) for p in error.absolute_path)
    return f"{error.message} (at /{where})" if where else error.message


def _json_escape(text: str) -> str:
    return json.dumps(text)[1:-1]


def _handler_class(gateway: LocalApiGateway) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in separate writes: with Nagle on, every keep-alive response
        # waited ~40 ms for the client's delayed ACK (each POST of a chaos run; as the provider).
        disable_nagle_algorithm = True

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_PAYLOAD_BYTES:
                body: bytes | None = None
                self.close_connection = True  # the body is left unread
            else:
                body = self.rfile.read(length) if length else b""
            status, headers, payload = gateway.handle(
                self.command, self.path, list(self.headers.items()), body, self.client_address[0]
            )
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = _serve
        # Every method reaches the gateway's routing, as on API Gateway, which answers an
        # unknown method like any unknown route instead of a bare HTTP server's 501.
        do_TRACE = do_CONNECT = do_QUERY = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass  # access logs would drown the functions' structured logs

    return Handler
