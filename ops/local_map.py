"""The local stack's resource map: what a running ``make serve`` publishes so that
``orders-ops`` needs no flags against it.

``devstack/resource_map.py`` writes the map while the local stack runs and removes it when the
stack stops cleanly; this module defines it and reads it. It names everything the operator's
tool would otherwise be given by flags and environment variables: one endpoint per AWS
service (DynamoDB has its own, ``devstack/moto_process.py``), the credentials and region the
local AWS accepts, the stack's outputs under their CloudFormation output keys (so
``ops.resources`` reads them exactly as it reads a deployed stack's) and the database DSN.

A map is used only when the command names no target of its own (no ``--stack``, no
``--endpoint-url`` or ``AWS_ENDPOINT_URL*``, no resource flag): anything explicit keeps
today's behaviour, so a command against an AWS account never reaches the local stack.
A map whose process is gone (the stack was killed) is reported and ignored.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

MAP_FORMAT: Final = 1
# The checkout this package runs from (an editable install: `.venv/bin/orders-ops`).
DEFAULT_PATH: Final = Path(__file__).resolve().parents[1] / ".devstack" / "resources.json"
DEFAULT_ENDPOINT: Final = "default"  # the key of the endpoint that serves every other service


@dataclass(frozen=True)
class LocalStackMap:
    pid: int  # the process that runs the local stack: a map without it is stale
    started_at: str  # ISO 8601, for the operator's eye
    stack_name: str
    region: str
    endpoints: Mapping[str, str]  # boto3 service name (or DEFAULT_ENDPOINT) -> URL
    access_key_id: str
    secret_access_key: str
    outputs: Mapping[str, str]  # CloudFormation output key -> its local value
    api_url: str
    db_dsn: str | None = None
    format: int = field(default=MAP_FORMAT)

    def endpoint_for(self, service: str) -> str:
        return self.endpoints.get(service, self.endpoints[DEFAULT_ENDPOINT])

    def to_json(self) -> str:
        data = asdict(self)
        data["endpoints"] = dict(self.endpoints)
        data["outputs"] = dict(self.outputs)
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> LocalStackMap:
        """Raises ValueError for anything but a map of this format."""
        data: Any = json.loads(text)
        if not isinstance(data, dict) or data.get("format") != MAP_FORMAT:
            raise ValueError(f"not a resource map of format {MAP_FORMAT}")
        try:
            endpoints = {str(k): str(v) for k, v in data["endpoints"].items()}
            if DEFAULT_ENDPOINT not in endpoints:
                raise ValueError(f"no {DEFAULT_ENDPOINT!r} endpoint")
            return cls(
                pid=int(data["pid"]),
                started_at=str(data["started_at"]),
                stack_name=str(data["stack_name"]),
                region=str(data["region"]),
                endpoints=MappingProxyType(endpoints),
                access_key_id=str(data["access_key_id"]),
                secret_access_key=str(data["secret_access_key"]),
                outputs=MappingProxyType({str(k): str(v) for k, v in data["outputs"].items()}),
                api_url=str(data["api_url"]),
                db_dsn=None if data.get("db_dsn") is None else str(data["db_dsn"]),
            )
        except (KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"incomplete resource map: {error!r}") from error


@dataclass(frozen=True)
class Lookup:
    """What is at a map's path: a live map, or why there is none to use (``note``)."""

    path: Path
    local: LocalStackMap | None = None
    note: str | None = None
    stale_pid: int | None = None  # the ended process of a map left behind


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def find(path: Path = DEFAULT_PATH) -> Lookup:
    """The live map at ``path``; no map is no note, an unusable one says why."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Lookup(path)
    except OSError as error:
        return Lookup(path, note=f"cannot read the local stack map {path}: {error}")
    try:
        local = LocalStackMap.from_json(text)
    except ValueError as error:
        return Lookup(path, note=f"ignoring the local stack map {path}: {error}")
    if not process_alive(local.pid):
        return Lookup(
            path,
            stale_pid=local.pid,
            note=(
                f"ignoring the stale local stack map {path}: its process {local.pid} "
                f"(started {local.started_at}) is gone, so the stack was stopped without "
                "cleaning up; start `make serve` again, or delete the file"
            ),
        )
    return Lookup(path, local=local)


def used_note(local: LocalStackMap, path: Path) -> str:
    return (
        f"using the local stack {local.stack_name} (pid {local.pid}, started "
        f"{local.started_at}) from {path}"
    )
