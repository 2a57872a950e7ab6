"""Lambda assets built on this machine, without Docker (F04, F16; ADR 0002).

Two assets serve all functions:
- the dependencies layer, installed from the hashed `functions/requirements.lock` as
  manylinux aarch64 wheels for CPython 3.13 and cached under `.build/layer-<hash>`, so only the
  first synth after a lock change needs the package index;
- one code asset with `functions/orders_saga` (no tests, no caches) and its bytecode.

Bytecode is compiled with `--invalidation-mode unchecked-hash`: CDK zips assets with fixed
timestamps, which would make timestamp-checked .pyc files stale, and /var/task is read-only,
so stale bytecode would be recompiled on every cold start (F04).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import aws_cdk as cdk
import jsii
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from infra.config import (
    LAMBDA_ARCHITECTURE,
    LAMBDA_PIP_PLATFORMS,
    LAMBDA_PYTHON_VERSION,
    LAMBDA_RUNTIME,
)

LOG = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
FUNCTIONS_DIR = REPO_ROOT / "functions"
PACKAGE_DIR = FUNCTIONS_DIR / "orders_saga"
LOCK_FILE = FUNCTIONS_DIR / "requirements.lock"
BUILD_DIR = REPO_ROOT / ".build"
# Bump when the recipe below changes, so cached layers built the old way are not reused.
LAYER_RECIPE_VERSION = "1"
CODE_EXCLUDES = ("tests", "__pycache__", "*.pyc", ".pytest_cache", ".mypy_cache")
# Installed by pip but never imported at runtime: console scripts.
LAYER_PRUNE = ("bin",)
# Docker is never started: every asset bundles locally (try_bundle returns True).
_UNUSED_IMAGE = cdk.DockerImage.from_registry("local-bundling-only")


class BundlingError(RuntimeError):
    """An asset could not be built; synthesis must stop."""


def _running_lambda_python() -> bool:
    return f"{sys.version_info.major}.{sys.version_info.minor}" == LAMBDA_PYTHON_VERSION


def _compile_bytecode(root: Path) -> None:
    """Precompile for the Lambda interpreter, only when we are that interpreter (F16)."""
    if not _running_lambda_python():
        LOG.warning(
            "Python %s is not the Lambda runtime (%s): shipping the asset without bytecode",
            sys.version.split()[0],
            LAMBDA_PYTHON_VERSION,
        )
        return
    compile_unchecked(root)


def compile_unchecked(root: Path) -> None:
    """Compile every module under ``root`` with this interpreter, ``unchecked-hash`` bytecode
    (the asset's timestamps are fixed and /var/task is read-only, so checked bytecode would be
    recompiled on every cold start)."""
    subprocess.run(  # noqa: S603 - fixed argv, our own interpreter
        [
            sys.executable,
            "-m",
            "compileall",
            "-q",
            "-j0",
            "--invalidation-mode",
            "unchecked-hash",
            str(root),
        ],
        check=True,
        capture_output=True,
    )


def layer_fingerprint(
    lock_file: Path = LOCK_FILE, platforms: Sequence[str] = LAMBDA_PIP_PLATFORMS
) -> str:
    """Identity of a layer build: the lock plus everything that changes which wheels we get."""
    digest = hashlib.sha256()
    digest.update(lock_file.read_bytes())
    recipe = (LAYER_RECIPE_VERSION, LAMBDA_PYTHON_VERSION, *platforms)
    digest.update("\0".join(recipe).encode())
    digest.update(b"bytecode" if _running_lambda_python() else b"source-only")
    return digest.hexdigest()


def build_layer(
    lock_file: Path = LOCK_FILE,
    build_dir: Path = BUILD_DIR,
    platforms: Sequence[str] = LAMBDA_PIP_PLATFORMS,
) -> Path:
    """Install the lock into `<build_dir>/layer-<fingerprint>/python` once; return that dir.

    `platforms` are pip's `--platform` tags; only the deployed ones are ever uploaded. The
    F16 proof builds the same recipe for this machine's architecture to import the handlers
    from it (tests/catalogue/test_f16_built_assets.py)."""
    fingerprint = layer_fingerprint(lock_file, platforms)
    cached = build_dir / f"layer-{fingerprint}"
    if (cached / "python").is_dir():
        return cached
    build_dir.mkdir(parents=True, exist_ok=True)
    # Build beside the cache and rename: a concurrent synth never sees a half-built layer.
    staging = Path(tempfile.mkdtemp(prefix="layer-staging-", dir=build_dir))
    try:
        platform_args = [arg for platform in platforms for arg in ("--platform", platform)]
        subprocess.run(  # noqa: S603 - fixed argv, our own interpreter
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--quiet",  # -qq: only errors, not the index warnings
                "--disable-pip-version-check",
                "--no-compile",
                # The lock is complete and hashed; --no-deps stops pip from pulling botocore,
                # which aws-xray-sdk declares but the runtime provides (ADR 0002).
                "--no-deps",
                "--require-hashes",
                *platform_args,
                "--implementation",
                "cp",
                "--only-binary=:all:",
                "--python-version",
                LAMBDA_PYTHON_VERSION,
                "--target",
                str(staging / "python"),
                "-r",
                str(lock_file),
            ],
            check=True,
        )
        for name in LAYER_PRUNE:
            shutil.rmtree(staging / "python" / name, ignore_errors=True)
        _compile_bytecode(staging / "python")
        try:
            staging.rename(cached)
        except OSError:
            if not (cached / "python").is_dir():  # lost a race only if the winner finished
                raise
    except subprocess.CalledProcessError as exc:
        raise BundlingError(f"pip could not build the layer from {lock_file}: {exc}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return cached


def _copy_tree(source: Path, target: Path) -> None:
    """Hard-link where possible (same filesystem): a 40 MB layer copies in milliseconds."""

    def link_or_copy(src: str, dst: str) -> object:
        try:
            os.link(src, dst)
        except OSError:
            return shutil.copy2(src, dst)
        return dst

    shutil.copytree(source, target, dirs_exist_ok=True, copy_function=link_or_copy)


@jsii.implements(cdk.ILocalBundling)
class _LayerBundler:
    def try_bundle(self, output_dir: str, *, image: cdk.DockerImage, **_: object) -> bool:
        _copy_tree(build_layer(), Path(output_dir))
        return True


@jsii.implements(cdk.ILocalBundling)
class _CodeBundler:
    def try_bundle(self, output_dir: str, *, image: cdk.DockerImage, **_: object) -> bool:
        target = Path(output_dir) / PACKAGE_DIR.name
        shutil.copytree(PACKAGE_DIR, target, ignore=shutil.ignore_patterns(*CODE_EXCLUDES))
        _compile_bytecode(target)
        return True


def dependencies_layer(scope: Construct, construct_id: str) -> lambda_.LayerVersion:
    """The shared third-party layer: the versions the tests ran are the versions deployed."""
    return lambda_.LayerVersion(
        scope,
        construct_id,
        description="function dependencies from functions/requirements.lock",
        compatible_runtimes=[LAMBDA_RUNTIME],
        compatible_architectures=[LAMBDA_ARCHITECTURE],
        code=lambda_.Code.from_asset(
            str(FUNCTIONS_DIR),
            asset_hash_type=cdk.AssetHashType.CUSTOM,
            asset_hash=layer_fingerprint(),
            bundling=cdk.BundlingOptions(image=_UNUSED_IMAGE, local=_LayerBundler()),
        ),
    )


def code_asset() -> lambda_.Code:
    """One asset for every handler (docs/architecture.md): one upload, one hash per deploy."""
    return lambda_.Code.from_asset(
        str(PACKAGE_DIR),
        # The fingerprint covers the sources only, so a rebuild of identical code is a no-op.
        asset_hash_type=cdk.AssetHashType.SOURCE,
        exclude=[*CODE_EXCLUDES, "**/__pycache__", "**/*.pyc"],
        bundling=cdk.BundlingOptions(image=_UNUSED_IMAGE, local=_CodeBundler()),
    )
