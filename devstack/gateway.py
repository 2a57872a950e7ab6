"""A local API Gateway (REST API, Lambda proxy) built from the template's method definitions.

It does what the deployed API does before the function runs, in the same order:
0. HTTP framing, on werkzeug's server (not hand-parsed ``http.server``): a bad, negative or
   repeated Content-Length, Content-Length with Transfer-Encoding, a transfer coding other than
   chunked, a malformed chunked body or a body cut short is answered 400 (a stalled one 408)
   with a short reason in the gateway's error shape, and the connection is closed, so nothing
   left of the body is read as a second request. Chunked bodies are decoded and the header is
   dropped from the event, as API Gateway does;
1. route ``/<stage>/<path>`` to a method (no route: 403 Missing Authentication Token);
2. payload limit (10 MB: 413);
3. Cognito user-pool authorizer: the ``Authorization`` header must be an Id token of the
   local pool, signed with moto's key, for an app client of the pool, unexpired (else 401);
4. request validator: required headers / query strings, then the body against the method's
   AWS::ApiGateway::Model (JSON schema draft 4), answered with the template's
   GatewayResponses (F11); a body nested deeper than MAX_JSON_DEPTH is refused before it is
   parsed, and values quoted in a reason are cut short (a reason never echoes the body);
5. a real-format proxy event (claims in ``requestContext.authorizer.claims``) to the
   function's worker, whose ``{statusCode, headers, body}`` becomes the HTTP response
   (a function error or a malformed response: 502, as in AWS).

Every error body has one shape, the function's too: ``{"message": str, "reason": ...}``
(``Error`` in docs/openapi.json; the gateway's from the template's GatewayResponses, which
define DEFAULT_4XX and DEFAULT_5XX, so API Gateway's own ``{"message": ...}`` never shows).
"""

from __future__ import annotations

import base64
import io
import json
import re
import socket
import sys
import threading
import time
import uuid
from array import array
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from itertools import accumulate, islice
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qs, urlsplit

import jsonschema
import jwt
from moto.utilities.utils import load_resource
from werkzeug.serving import (
    BaseWSGIServer,
    WSGIRequestHandler,
    make_server,
    select_address_family,
)

from devstack.lambda_runtime import Invoker
from devstack.template import ApiMethodSpec, CfnTemplate

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

MAX_PAYLOAD_BYTES: Final = 10 * 1024 * 1024  # API Gateway REST payload quota
# How deep a validated JSON body may nest. AWS documents no bound; Python's json and jsonschema
# recurse per level, and a body nested 100,000 deep raised RecursionError and got no answer.
# This project's models are a few levels deep, so a body this deep fails validation in AWS
# too: the bound changes only the reason of the 400, never the status (docs/aws-fidelity.md).
MAX_JSON_DEPTH: Final = 1000
# A value quoted in a validation reason is cut to this many characters, at most this many
# errors are listed, each at most _MAX_ERROR_CHARS long: a reason once echoed a 7 MB body.
MAX_QUOTED_CHARS: Final = 100
MAX_LISTED_ERRORS: Final = 10
_MAX_ERROR_CHARS: Final = 3 * MAX_QUOTED_CHARS
# A client that stops sending in the middle of a request is answered 408 after this long, so
# a short body never holds a thread forever.
READ_TIMEOUT_SECONDS: Final = 30.0

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
# JSON strings (whose brackets do not nest), and the byte maps that turn what is left into a
# +1/-1 walk whose running maximum is the depth.
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_A_BRACKET: Final = bytes(b for b in range(256) if b not in b"[]{}")
_BRACKET_STEP: Final = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
# werkzeug's environ folds a repeated header into one value and drops names with "_"; the
# framing checks and the proxy event need the headers and the target as sent.
_HEADERS_KEY: Final = "devstack.gateway.headers"
_TARGET_KEY: Final = "devstack.gateway.target"
_ABANDON_INPUT_KEY: Final = "devstack.gateway.abandon_input"
# Not forwarded to the function: API Gateway drops Transfer-Encoding (it hands over the decoded
# body), and the HTTP server, not the function, frames the response.
_DROPPED_REQUEST_HEADERS: Final = frozenset({"transfer-encoding"})
_FRAMING_RESPONSE_HEADERS: Final = frozenset({"content-length", "transfer-encoding", "connection"})


@dataclass(frozen=True)
class Route:
    method: ApiMethodSpec
    pattern: re.Pattern[str]
    invoker: Invoker
    invoked_function_arn: str | None
    schemas: Mapping[str, dict[str, Any]]  # content type -> JSON schema


class GatewayError(Exception):
    """A request API Gateway answers itself, with the gateway response of this type."""

    def __init__(
        self,
        response_type: str,
        message: str,
        validation_error: str = "",
        *,
        status: int | None = None,  # for DEFAULT_4XX, which has no status of its own
    ) -> None:
        super().__init__(message)
        self.response_type = response_type
        self.message = message
        self.validation_error = validation_error
        self.status = status


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
        read_timeout: float = READ_TIMEOUT_SECONDS,
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
        # Bound here so that a busy port raises OSError: werkzeug's own bind prints and calls
        # sys.exit. One thread per connection, one request per connection (werkzeug closes
        # each after its response, having drained what the client still sends).
        listener = socket.create_server((host, port), family=select_address_family(host, port))
        try:
            self._server: BaseWSGIServer = make_server(
                host,
                port,
                self._wsgi,
                threaded=True,
                request_handler=_handler_class(read_timeout),
                fd=listener.fileno(),
            )
        finally:
            listener.close()  # the server holds its own duplicate
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

    # HTTP

    def _wsgi(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        method = str(environ["REQUEST_METHOD"])
        headers: list[tuple[str, str]] = environ[_HEADERS_KEY]
        try:
            body = _read_body(environ, headers)
            forwarded = [(k, v) for k, v in headers if k.lower() not in _DROPPED_REQUEST_HEADERS]
            status, out, payload = self.handle(
                method, environ[_TARGET_KEY], forwarded, body, str(environ["REMOTE_ADDR"])
            )
        except GatewayError as err:
            status, out, payload = self._gateway_response(err, str(uuid.uuid4()))
        except Exception as exc:  # noqa: BLE001 - a gateway bug still answers in the error shape
            self._say(f"API Gateway: {method} {environ[_TARGET_KEY]!r} failed: {exc!r}")
            status, out, payload = self._gateway_response(
                GatewayError("DEFAULT_5XX", "Internal server error", status=500),
                str(uuid.uuid4()),
            )
        response_headers = [
            (k, v) for k, v in out.items() if k.lower() not in _FRAMING_RESPONSE_HEADERS
        ]
        response_headers.append(("Content-Length", str(len(payload))))
        start_response(_status_line(status), response_headers)
        return [] if method == "HEAD" else [payload]

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
        if _json_depth(body) > MAX_JSON_DEPTH:
            reason = f"[JSON nested deeper than {MAX_JSON_DEPTH} levels]"
            raise GatewayError("BAD_REQUEST_BODY", "Invalid request body", reason)
        try:
            document = json.loads(body or b"null")
        except ValueError as exc:
            reason = f"[{_cut(str(exc), _MAX_ERROR_CHARS)}]"
            raise GatewayError("BAD_REQUEST_BODY", "Invalid request body", reason) from exc
        validator = jsonschema.Draft4Validator(schema)
        try:
            # Lazily: a body of a million bad items makes only the errors that are listed.
            found = list(islice(validator.iter_errors(document), MAX_LISTED_ERRORS + 1))
        except RecursionError as exc:  # a recursive ($ref) model can recurse before the bound
            reason = "[JSON nested too deep to validate]"
            raise GatewayError("BAD_REQUEST_BODY", "Invalid request body", reason) from exc
        if found:
            errors = sorted(found[:MAX_LISTED_ERRORS], key=lambda e: list(e.absolute_path))
            detail = ", ".join(_describe(e) for e in errors)
            more = ", ..." if len(found) > MAX_LISTED_ERRORS else ""
            raise GatewayError("BAD_REQUEST_BODY", "Invalid request body", f"[{detail}{more}]")

    def _gateway_response(
        self, err: GatewayError, request_id: str
    ) -> tuple[int, dict[str, str], bytes]:
        status, _ = _DEFAULT_RESPONSES.get(err.response_type, (500, ""))
        status = err.status or status
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
    # jsonschema quotes the offending value whole (its repr): cut it, keep what is said of it.
    value = repr(error.instance)
    message = error.message
    if len(value) > MAX_QUOTED_CHARS:
        message = message.replace(value, _cut(value, MAX_QUOTED_CHARS))
    where = "/".join(str(p) for p in error.absolute_path)
    return _cut(f"{message} (at /{where})" if where else message, _MAX_ERROR_CHARS)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _json_depth(body: bytes) -> int:
    """How deep ``body`` nests, without parsing it: brackets outside strings, in C loops."""
    steps = _JSON_STRING.sub(b"", body).translate(None, _NOT_A_BRACKET).translate(_BRACKET_STEP)
    return max(accumulate(array("b", steps)), default=0)


def _json_escape(text: str) -> str:
    return json.dumps(text)[1:-1]


def _bad_request(reason: str, status: int = HTTPStatus.BAD_REQUEST) -> GatewayError:
    # API Gateway fills $context.error.validationErrorString only for model errors.
    return GatewayError("DEFAULT_4XX", reason, "", status=status)


def _read_body(environ: WSGIEnvironment, headers: list[tuple[str, str]]) -> bytes | None:
    """The body as its headers frame it; None when it is over API Gateway's payload limit.

    Framing that two parsers could read two ways is refused, never guessed (RFC 9112 6.3):
    what a guess leaves unread would be the start of a "second request".
    """
    lengths = [v.strip() for k, v in headers if k.lower() == "content-length"]
    codings = [v for k, v in headers if k.lower() == "transfer-encoding"]
    stream = environ["wsgi.input"]
    if codings:
        if lengths:
            raise _bad_request("Content-Length and Transfer-Encoding are exclusive")
        tokens = [c.strip().lower() for c in ",".join(codings).split(",")]
        if tokens != ["chunked"] or not environ.get("wsgi.input_terminated"):
            raise _bad_request("Unsupported Transfer-Encoding: only chunked")
        # API Gateway takes a chunked request and hands the function the decoded body (the
        # header is dropped); werkzeug's stream decodes it. One byte over tells "too large".
        try:
            body: bytes = stream.read(MAX_PAYLOAD_BYTES + 1)
        except TimeoutError as exc:
            environ[_ABANDON_INPUT_KEY]()
            raise _bad_request("Request body not received in time", 408) from exc
        except OSError as exc:  # werkzeug's word for a malformed chunk
            raise _bad_request("Malformed chunked body") from exc
        return None if len(body) > MAX_PAYLOAD_BYTES else body
    if not lengths:
        return b""  # no framing header: no body (what follows is not read as one)
    if len(lengths) > 1:
        raise _bad_request("Duplicate Content-Length header")
    value = lengths[0]
    if not (value.isascii() and value.isdigit()):
        raise _bad_request("Invalid Content-Length header")
    if len(value) > len(str(MAX_PAYLOAD_BYTES)) or int(value) > MAX_PAYLOAD_BYTES:
        return None  # left unread: werkzeug drains it after the 413 and closes
    length = int(value)
    try:
        body = stream.read(length) if length else b""
    except TimeoutError as exc:
        environ[_ABANDON_INPUT_KEY]()
        raise _bad_request("Request body not received in time", 408) from exc
    if len(body) < length:
        raise _bad_request("Request body shorter than its Content-Length")
    return body


def _status_line(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)


def _handler_class(read_timeout: float) -> type[WSGIRequestHandler]:
    class Handler(WSGIRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in separate writes: with Nagle on, every response waited
        # ~40 ms for the client's delayed ACK (each POST of a chaos run; as the provider).
        disable_nagle_algorithm = True
        timeout = read_timeout
        # Every method reaches the gateway's routing (werkzeug maps any do_<METHOD> to
        # run_wsgi), as on API Gateway, which answers an unknown method like any unknown route
        # instead of a bare HTTP server's 501.

        def run_wsgi(self) -> None:
            try:
                urlsplit(self.path)
            except ValueError:  # werkzeug's environ would raise it: no answer at all
                self.send_error(HTTPStatus.BAD_REQUEST, "Invalid request target")
                return
            super().run_wsgi()

        def make_environ(self) -> WSGIEnvironment:
            environ = super().make_environ()
            environ[_HEADERS_KEY] = list(self.headers.items())
            environ[_TARGET_KEY] = self.path
            environ[_ABANDON_INPUT_KEY] = self._abandon_input
            return environ

        def _abandon_input(self) -> None:
            # A stream that timed out refuses every later read, werkzeug's drain after the
            # response included (it would log that as a server error): it drains nothing.
            self.rfile = io.BytesIO()

        def send_error(
            self, code: int, message: str | None = None, explain: str | None = None
        ) -> None:
            # http.server answers a malformed request line or header block itself (400, 414,
            # 431, 505): in the gateway's error shape, not its HTML page.
            phrase = HTTPStatus(code).phrase
            if not self.request_version.startswith("HTTP/1."):
                self.request_version = "HTTP/1.1"  # else no status line: an HTTP/0.9 answer
            body = {"message": _cut(message or phrase, MAX_QUOTED_CHARS), "reason": ""}
            payload = json.dumps(body).encode()
            self.close_connection = True
            self.send_response(code, phrase)
            self.send_header("Content-Type", "application/json")
            self.send_header("Connection", "close")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            pass  # access logs would drown the functions' structured logs

        def log(self, type: str, message: str, *args: Any) -> None:
            pass  # protocol errors are answered; werkzeug still reports a gateway exception

    return Handler
