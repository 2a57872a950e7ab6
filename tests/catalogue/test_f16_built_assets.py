"""F16 Works locally, crashes in the cloud: the assets CDK uploads are built for Lambda, hold
exactly the locked dependencies, and every handler imports from them and nothing else.

The proofs read the assets of the session's dev synthesis (tests/synth.py), found the way
CloudFormation finds them: each function's ``Code.S3Key`` and its layer's ``Content.S3Key``,
looked up in the synthesized asset manifest.

This machine is not Lambda's architecture, so the deployed layer's native wheels cannot be
loaded here. Two halves make the proof:
1. the deployed layer is inspected: every native library is an ELF for Lambda's machine, every
   extension module and wheel is tagged for the deployed CPython, and the installed
   distributions are exactly the hashed lock;
2. the same layer recipe (``infra.bundling.build_layer``, only the ``--platform`` tags changed
   to this machine's) is built once per lock into ``.build/`` (the first run needs the package
   index, about 30 s here; later runs reuse it), and every handler is imported in a clean
   ``python3.13 -I -S`` whose ``sys.path`` is the code asset, that layer, the runtime's boto3
   and the standard library, nothing else.

boto3/botocore/s3transfer are not in the layer on purpose (ADR 0002): the python3.13 runtime
provides them in ``/var/runtime``, after ``/opt/python`` on ``sys.path``. The stand-in for it
holds exactly those three distributions, at the versions the tests pin; anything else boto3
needs (jmespath, dateutil, urllib3) must come from our layer, as it does in Lambda.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import platform
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from packaging.markers import Marker
from packaging.tags import parse_tag
from packaging.utils import canonicalize_name

from benchmarks import lambda_image
from infra.bundling import LOCK_FILE
from infra.config import (
    FUNCTION_NAMES,
    LAMBDA_ARCHITECTURE,
    LAMBDA_PYTHON_VERSION,
)
from infra.functions import HANDLERS
from tests.catalogue.templates import our_functions, resources
from tests.infra.conftest import Synthesized

# ELF e_machine values (System V ABI): what the kernel checks before it loads a library.
EM_AARCH64 = 183
EM_X86_64 = 62
MACHINES = lambda_image.MACHINES
# CDK's Architecture name -> the machine in wheel tags and extension module suffixes.
LAMBDA_MACHINE = {"arm64": "aarch64", "x86_64": "x86_64"}[LAMBDA_ARCHITECTURE.name]
CPYTHON_TAG = "cp" + LAMBDA_PYTHON_VERSION.replace(".", "")  # cp313
# What the python3.13 runtime itself provides (ADR 0002); nothing else may come from it.
RUNTIME_PROVIDED = lambda_image.RUNTIME_PROVIDED
# The environment pip evaluates the lock's markers in when it builds the layer for Lambda.
LAMBDA_MARKER_ENVIRONMENT = {
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "platform_machine": LAMBDA_MACHINE,
    "platform_system": "Linux",
    "sys_platform": "linux",
    "os_name": "posix",
    "python_version": LAMBDA_PYTHON_VERSION,
    "python_full_version": f"{LAMBDA_PYTHON_VERSION}.0",
}
_LOCK_LINE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)\s*(?:;\s*(.+?))?\s*\\?\s*$")
_EXTENSION = re.compile(r"\.(?:cpython-(\d+)-([a-z0-9_]+)-linux-gnu|abi3)\.so$")

# Runs in the clean interpreter: only the given dirs and the standard library on sys.path.
IMPORT_PROBE = """
import importlib, json, sys
stdlib = list(sys.path)
code, layer, runtime, spec = sys.argv[1:5]
sys.path[:] = [code, layer, runtime, *stdlib]
module_name, _, attr = spec.rpartition(".")
error = None
try:
    handler = getattr(importlib.import_module(module_name), attr)
    if not callable(handler):
        error = f"{spec} is not callable"
except BaseException as exc:
    import traceback
    error = "".join(traceback.format_exception(exc))[-3000:]
locations = {}
for name, module in list(sys.modules.items()):
    found = getattr(module, "__file__", None)
    paths = [found] if found else list(getattr(module, "__path__", []) or [])
    locations[name] = paths
print(json.dumps({
    "error": error,
    "stdlib": stdlib,
    "modules": locations,
    "version": list(sys.version_info[:2]),
    "isolated": sys.flags.isolated,
    "no_site": sys.flags.no_site,
}))
"""


# --------------------------------------------------------------------------- the assets


def built_assets(stack: Synthesized) -> tuple[Path, Path]:
    """(code asset dir, layer asset dir) shared by every function, as ADR 0002 says: resolved
    from each function's Code.S3Key and its layer's Content.S3Key, as CloudFormation does."""
    return lambda_image.built_assets(stack.config.name, stack.outdir)


@pytest.fixture(scope="module")
def lambda_assets(synthesized: dict[str, Synthesized]) -> tuple[Path, Path]:
    return built_assets(synthesized["dev"])


def elf_machine(path: Path) -> int | None:
    """e_machine of an ELF file, None when the file is not ELF."""
    with path.open("rb") as handle:
        header = handle.read(20)
    if len(header) < 20 or header[:4] != b"\x7fELF":
        return None
    return int.from_bytes(header[18:20], "little" if header[5] == 1 else "big")


def shared_objects(site: Path) -> list[Path]:
    return sorted(p for p in site.rglob("*") if p.is_file() and re.search(r"\.so(\.|$)", p.name))


def locked_distributions(lock_file: Path = LOCK_FILE) -> dict[str, str]:
    """name -> version of every lock entry whose marker holds on Lambda."""
    locked: dict[str, str] = {}
    for line in lock_file.read_text(encoding="utf-8").splitlines():
        match = _LOCK_LINE.match(line)
        if match is None:
            continue
        name, version, marker = match.groups()
        if marker and not Marker(marker).evaluate(LAMBDA_MARKER_ENVIRONMENT):
            continue
        locked[canonicalize_name(name)] = version
    assert locked, f"no requirement parsed from {lock_file}"
    return locked


def installed_distributions(site: Path) -> dict[str, str]:
    found: dict[str, str] = {}
    for dist in importlib.metadata.distributions(path=[str(site)]):
        name = canonicalize_name(dist.metadata["Name"])
        assert name not in found, f"{name} installed twice in {site}"
        found[name] = dist.version
    return found


def wheel_tags(site: Path) -> dict[str, list[str]]:
    tags: dict[str, list[str]] = {}
    for wheel in sorted(site.glob("*.dist-info/WHEEL")):
        lines = wheel.read_text(encoding="utf-8").splitlines()
        tags[wheel.parent.name] = [
            line.split(":", 1)[1].strip() for line in lines if line.startswith("Tag:")
        ]
    return tags


# --------------------------------------------------------------------------- 1. as deployed


def test_f16_the_layer_is_built_for_the_lambda_architecture_and_python(
    lambda_assets: tuple[Path, Path],
) -> None:
    """Given the synthesized dependencies layer, when every shared object, extension module
    and wheel tag in it is read, then each native library is an ELF for Lambda's machine
    (arm64: EM_AARCH64), each extension module is built for the deployed CPython (cp313) and
    each wheel is either pure Python or tagged cp313 (or abi3) for that machine.

    Fails if: LAMBDA_PIP_PLATFORMS or `--python-version` in infra/bundling.build_layer stop
    following infra/config.py (e.g. the layer is pip-installed for the build machine, or for
    x86_64 while the functions are arm64, or for another Python), which is the classic
    "invalid ELF header" / "No module named pydantic_core._pydantic_core" on the first cold
    start in the cloud.
    """
    _, layer = lambda_assets
    site = layer / "python"
    objects = shared_objects(site)
    extensions = [p for p in objects if p.name.endswith(".so") and _EXTENSION.search(p.name)]

    machines = {str(p.relative_to(site)): elf_machine(p) for p in objects}
    assert {"pydantic_core", "psycopg_binary"} <= {p.relative_to(site).parts[0] for p in objects}
    assert set(machines.values()) == {MACHINES[LAMBDA_MACHINE]}, machines
    for extension in extensions:
        match = _EXTENSION.search(extension.name)
        assert match is not None
        version, machine = match.groups()
        if version is not None:  # abi3 modules carry no version or machine in their name
            assert (f"cp{version}", machine) == (CPYTHON_TAG, LAMBDA_MACHINE), extension.name
    stray = [p.name for p in objects if p.name.endswith(".so") and p not in extensions]
    assert not [s for s in stray if "cpython" in s], f"mis-tagged extension modules: {stray}"
    for dist, tags in wheel_tags(site).items():
        assert tags, f"{dist} has no wheel tags"
        for tag in (t for text in tags for t in parse_tag(text)):
            pure = tag.abi == "none" and tag.platform == "any"
            binary = (
                tag.interpreter == CPYTHON_TAG or tag.abi == "abi3"
            ) and tag.platform.endswith(f"_{LAMBDA_MACHINE}")
            assert pure or binary, f"{dist}: {tag} does not run on {CPYTHON_TAG} {LAMBDA_MACHINE}"


@pytest.fixture(scope="module")
def native_layer() -> Path:
    """The layer recipe for this machine (only the platform tags differ), cached in .build/.

    Needs the package index on the first run after a lock change (like the layer itself);
    a BundlingError here means pip could not reach it, not that the test is flaky."""
    return lambda_image.native_layer()


@pytest.mark.parametrize("which", ["deployed", "native"])
def test_f16_the_layer_holds_exactly_the_locked_distributions(
    lambda_assets: tuple[Path, Path], native_layer: Path, which: str
) -> None:
    """Given functions/requirements.lock (hashed, exported from uv.lock) and a built layer,
    when the layer's installed distributions are listed, then they are exactly the lock's
    entries that apply on Lambda (linux, CPython 3.13): same names, same versions, none more.

    "native" is the layer the import test below runs from: it must be the same set, or that
    test would prove nothing about the deployed one.

    Fails if: the layer build resolves dependencies itself (`--no-deps` dropped: botocore and
    friends would be pulled into the layer), a package is added to the layer outside the lock,
    the lock and the layer drift (a stale .build/ cache whose fingerprint ignores the lock), or
    a platform-specific lock entry (tzdata on win32) is installed for Linux.
    """
    site = lambda_assets[1] / "python" if which == "deployed" else native_layer

    assert installed_distributions(site) == locked_distributions()


def test_f16_the_native_layer_is_the_same_recipe_for_this_machine(native_layer: Path) -> None:
    """Given the layer built by the same bundling code for this machine, when its libraries are
    read, then they are ELF for this machine: the architecture check above can tell the two
    apart, and the import test below really loads native code built from the lock.

    Fails if: build_layer ignores its `platforms` argument (the native build would then be
    the Lambda one, and importing from it would fail here).
    """
    machines = {elf_machine(p) for p in shared_objects(native_layer)}

    assert machines == {MACHINES[platform.machine()]}


# --------------------------------------------------------------------------- 2. imported


@pytest.fixture(scope="module")
def import_probes(
    synthesized: dict[str, Synthesized], lambda_assets: tuple[Path, Path], native_layer: Path
) -> dict[str, tuple[dict[str, Any], dict[str, Path]]]:
    """Every handler imported at once, each in its own clean interpreter and environment."""
    code, _ = lambda_assets
    runtime = lambda_image.runtime_standin()
    functions = our_functions(synthesized["dev"])
    # The interpreter itself, not the venv's launcher: -S keeps every site-packages away.
    interpreter = getattr(sys, "_base_executable", sys.executable)
    roots = {"code": code, "layer": native_layer, "runtime": runtime}
    running = {
        name: subprocess.Popen(  # fixed argv, no shell
            [
                interpreter,
                "-I",
                "-S",
                "-B",
                "-c",
                IMPORT_PROBE,
                *map(str, roots.values()),
                HANDLERS[name],
            ],
            env=lambda_image.lambda_environment(name, functions[name][1], task_root=str(code)),
            cwd=code,  # Lambda's working directory is the task root
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in FUNCTION_NAMES
    }
    results = {}
    for name, process in running.items():
        out, err = process.communicate(timeout=180)
        assert process.returncode == 0, (name, err[-3000:])
        results[name] = (json.loads(out.strip().splitlines()[-1]), roots)
    return results


def origin(path: str, roots: Mapping[str, Path], stdlib: list[str]) -> str:
    """Which directory a module was loaded from: code, layer, runtime, stdlib or outside."""
    resolved = Path(path).resolve()
    for name, root in roots.items():
        if resolved.is_relative_to(root.resolve()):
            return name
    if "site-packages" not in resolved.parts and any(
        resolved.is_relative_to(Path(entry).resolve()) for entry in stdlib
    ):
        return "stdlib"
    return "outside"


@pytest.mark.parametrize("name", FUNCTION_NAMES)
def test_f16_every_handler_imports_from_the_built_assets_alone(
    import_probes: dict[str, tuple[dict[str, Any], dict[str, Path]]], name: str
) -> None:
    """Given a clean CPython 3.13 (-I -S: no site-packages, no PYTHON* variables, no cwd) whose
    sys.path is the synthesized code asset, the layer built from the lock, the runtime's boto3
    and the standard library, when the function's handler is imported with its template
    environment, then it imports, is callable, and every loaded module comes from one of
    those places: our code from the code asset (with its shipped bytecode), boto3/botocore/
    s3transfer alone from the runtime, everything else third-party from the layer.

    Fails if: a handler imports a package that is in the dev environment but not in the lock
    (e.g. `import requests`, or moto/pytest leaking into function code), the code asset
    excludes a module the handlers need (CODE_EXCLUDES too broad), a lock entry is dropped, the
    layer relies on boto3's own dependencies from the runtime, or a handler path changes in
    infra/functions.HANDLERS without the module existing in the asset.
    """
    probe, roots = import_probes[name]
    modules: dict[str, list[str]] = probe["modules"]

    assert probe["error"] is None, probe["error"]
    assert probe["version"] == [int(v) for v in LAMBDA_PYTHON_VERSION.split(".")]
    assert (probe["isolated"], probe["no_site"]) == (1, 1)
    assert "site" not in modules
    origins = {
        module: {origin(path, roots, probe["stdlib"]) for path in paths}
        for module, paths in modules.items()
        if paths
    }
    outside = {m: modules[m] for m, where in origins.items() if "outside" in where}
    assert outside == {}
    from_runtime = {m.split(".")[0] for m, where in origins.items() if "runtime" in where}
    assert from_runtime <= set(RUNTIME_PROVIDED), from_runtime
    ours = {m for m in modules if m == "orders_saga" or m.startswith("orders_saga.")}
    assert HANDLERS[name].rpartition(".")[0] in ours
    assert all(origins[m] == {"code"} for m in ours), {m: origins[m] for m in ours}
    assert "aws_lambda_powertools" in {
        m.split(".")[0] for m, where in origins.items() if "layer" in where
    }
    no_bytecode = [
        path
        for m in ours
        for path in modules[m]
        if path.endswith(".py") and not Path(importlib.util.cache_from_source(path)).is_file()
    ]
    assert no_bytecode == [], "the code asset must ship compiled bytecode (F04)"


# --------------------------------------------------------------------------- TLS to PostgreSQL

# What each DB_HOST target presents (issue 10): RDS Proxy an ACM certificate (Amazon roots),
# the DB instance an RDS CA certificate (the RDS bundle).
BUNDLE_FOR_TARGET = {
    "AWS::RDS::DBProxy": "amazon-root-cas.pem",
    "AWS::RDS::DBInstance": "rds-ca-bundle.pem",
}


def test_f16_every_database_client_verifies_its_server_with_a_bundle_in_the_code_asset(
    stage_stack: Synthesized,
) -> None:
    """Issue 10, findings 1 and 2: Lambda has no CA store psycopg's OpenSSL finds (``system``
    resolves to psycopg's build path) and the RDS CA is in no public store. Every function that
    connects to PostgreSQL must name, in DB_SSLROOTCERT, a bundle that the uploaded code asset
    really holds, the right one for what its DB_HOST points at, with verify-full.

    Fails if: infra/data.py drops DB_SSLROOTCERT or names a file the asset lacks (the bundle
    excluded from the asset, renamed), or Migrate (direct to the instance) gets the proxy's
    Amazon roots, under which the instance's certificate cannot verify."""
    code, _ = built_assets(stage_stack)
    res = resources(stage_stack)
    checked = {}
    for name, (_, props) in our_functions(stage_stack).items():
        env = props.get("Environment", {}).get("Variables", {})
        if "DB_HOST" not in env:
            continue
        target = env["DB_HOST"]["Fn::GetAtt"][0]
        bundle = BUNDLE_FOR_TARGET[str(res.type_of(target))]
        assert env["DB_SSLMODE"] == "verify-full", name
        assert env["DB_SSLROOTCERT"] == bundle, name
        assert (code / "orders_saga" / "certs" / bundle).is_file(), bundle
        checked[name] = bundle
    assert checked["Migrate"] == "rds-ca-bundle.pem"
    assert set(checked.values()) == set(BUNDLE_FOR_TARGET.values())
