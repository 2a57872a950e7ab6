"""What a Lambda execution environment loads, rebuilt on this machine (F04, F16).

Shared by the cold-init benchmark and the F04/F16 tests, so both import the handlers the same
way: a clean ``python3.13 -I -S`` whose ``sys.path`` is the code asset, the dependencies layer
and the runtime's boto3, nothing else, in the function's environment from the template.

- ``native_layer()``: the layer recipe (``infra.bundling.build_layer``) for this machine's
  platform tags, cached in ``.build/`` (the deployed layer is aarch64 and cannot load here).
- ``runtime_standin()``: boto3, botocore and s3transfer as ``/var/runtime`` provides them
  (ADR 0002), compiled, cached by version.
- ``lambda_environment()``: the template's variables plus what the runtime sets.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import shutil
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from benchmarks.cost import TEMPLATES, load_template
from infra.bundling import BUILD_DIR, build_layer, compile_unchecked
from infra.config import LAMBDA_PIP_PLATFORMS
from infra.functions import HANDLERS
from infra.service import this_service

# What the python3.13 runtime itself provides (ADR 0002); nothing else may come from it.
RUNTIME_PROVIDED: Final = ("boto3", "botocore", "s3transfer")
# ELF e_machine values (System V ABI) of the machines we can build wheels for.
MACHINES: Final = {"aarch64": 183, "x86_64": 62}
LAMBDA_MACHINE: Final = "aarch64" if "aarch64" in LAMBDA_PIP_PLATFORMS[0] else "x86_64"


def interpreter() -> str:
    """The interpreter itself, not a venv's launcher: with -S no site-packages is visible."""
    return str(getattr(sys, "_base_executable", sys.executable))


def native_layer() -> Path:
    """The layer recipe for this machine (only the platform tags differ), cached in .build/.

    Needs the package index on the first run after a lock change, as the layer itself does."""
    host = platform.machine()
    if host not in MACHINES:
        raise RuntimeError(f"no manylinux wheels for {host}")
    platforms = tuple(p.replace(LAMBDA_MACHINE, host) for p in LAMBDA_PIP_PLATFORMS)
    return build_layer(platforms=platforms) / "python"


def link_or_copy(source: Path, destination: Path) -> None:
    """Stage ``source`` at ``destination``: a hard link where the file system allows one."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)


def runtime_standin(build_dir: Path = BUILD_DIR) -> Path:
    """A directory holding only boto3, botocore and s3transfer, as /var/runtime provides them.

    Copied (hard-linked) from the distributions this interpreter has, compiled, and cached by
    their versions.
    """
    dists = [importlib.metadata.distribution(name) for name in RUNTIME_PROVIDED]
    key = "-".join(f"{d.metadata['Name']}{d.version}" for d in dists)
    target = build_dir / f"lambda-runtime-{key}"
    if target.is_dir():
        return target
    build_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="runtime-staging-", dir=build_dir))
    try:
        for dist in dists:
            for file in dist.files or []:
                if file.parts[0] in {"..", "bin"} or "__pycache__" in file.parts:
                    continue
                source = Path(str(dist.locate_file(file)))
                destination = staging / file
                link_or_copy(source, destination)
        # The runtime ships bytecode too; without it every probe would compile botocore.
        compile_unchecked(staging)
        try:
            staging.rename(target)
        except OSError:
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


# What Lambda's runtime puts in every environment, as far as a local import needs it (fake
# role credentials: nothing here may reach AWS).
RUNTIME_ENVIRONMENT: Final = {
    "PATH": "/usr/bin:/bin",
    "AWS_REGION": "eu-west-1",
    "AWS_DEFAULT_REGION": "eu-west-1",
    "AWS_ACCESS_KEY_ID": "ASIAEXAMPLE",
    "AWS_SECRET_ACCESS_KEY": "example",
    "AWS_SESSION_TOKEN": "example",
}


def lambda_environment(
    name: str, function_props: Mapping[str, Any], *, task_root: str = "/var/task"
) -> dict[str, str]:
    """What Lambda gives the function: its template variables plus the runtime's own.

    ``LAMBDA_TASK_ROOT`` matters beyond paths: the X-Ray SDK takes it as the sign that it runs
    in Lambda (and then builds no sampling client at import)."""
    env = {
        key: value if isinstance(value, str) else f"unresolved-{key.lower()}"
        for key, value in function_props["Environment"]["Variables"].items()
    }
    return {
        **env,
        **RUNTIME_ENVIRONMENT,
        "AWS_LAMBDA_FUNCTION_NAME": f"{this_service().name}-{name}",
        "AWS_LAMBDA_FUNCTION_VERSION": "1",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(function_props["MemorySize"]),
        "AWS_EXECUTION_ENV": "AWS_Lambda_python3.13",
        "LAMBDA_TASK_ROOT": task_root,
        "_HANDLER": function_props["Handler"],
    }


def template(stage: str = "dev", outdir: Path | None = None) -> dict[str, Any]:
    """The stage's synthesized template (``make synth`` writes it), or the one in ``outdir``."""
    if outdir is None:
        return load_template(stage)
    loaded: dict[str, Any] = json.loads(
        (outdir / f"{this_service().stack(stage)}.template.json").read_text(encoding="utf-8")
    )
    return loaded


def function_properties(tmpl: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """Logical function name (infra.functions.HANDLERS) -> its AWS::Lambda::Function props."""
    by_handler = {handler: name for name, handler in HANDLERS.items()}
    found: dict[str, Mapping[str, Any]] = {}
    for resource in tmpl["Resources"].values():
        props = resource.get("Properties", {})
        if resource["Type"] == "AWS::Lambda::Function" and props.get("Handler") in by_handler:
            found[by_handler[props["Handler"]]] = props
    return found


def uploaded_assets(outdir: Path, stage: str) -> dict[str, Path]:
    """S3 object key -> the staged directory CDK zips and uploads under that key."""
    manifest = outdir / f"{this_service().stack(stage)}.assets.json"
    files = json.loads(manifest.read_text(encoding="utf-8"))["files"]
    return {
        destination["objectKey"]: outdir / entry["source"]["path"]
        for entry in files.values()
        if entry["source"].get("packaging") == "zip"
        for destination in entry["destinations"].values()
    }


def built_assets(stage: str = "dev", outdir: Path | None = None) -> tuple[Path, Path]:
    """(code asset dir, layer asset dir) shared by every function, as ADR 0002 says: resolved
    from each function's Code.S3Key and its layer's Content.S3Key, as CloudFormation does."""
    outdir = outdir or TEMPLATES[stage].parent
    tmpl = template(stage, outdir)
    uploaded = uploaded_assets(outdir, stage)
    codes: set[Path] = set()
    layers: set[Path] = set()
    for props in function_properties(tmpl).values():
        codes.add(uploaded[props["Code"]["S3Key"]])
        for layer in props.get("Layers", []):
            layer_props = tmpl["Resources"][layer["Ref"]]["Properties"]
            layers.add(uploaded[layer_props["Content"]["S3Key"]])
    if len(codes) != 1 or len(layers) != 1:
        raise RuntimeError(f"expected one code asset and one layer, found {codes} {layers}")
    return codes.pop(), layers.pop()
