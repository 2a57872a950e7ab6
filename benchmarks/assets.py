"""Asset sizes: the code asset and the dependencies layer as CDK uploads them (issue 12).

``python -m benchmarks.assets [--stage dev] [--json]``

Reads the synthesized assembly (``make synth-dev`` writes ``cdk.out/``) and finds the two
assets every function uses the way CloudFormation does (``benchmarks.lambda_image.built_assets``:
each function's ``Code.S3Key`` and its layer's ``Content.S3Key`` in the asset manifest). For
each it prints the unzipped bytes (what counts against Lambda's 250 MB limit for a function
plus its layers), the zipped bytes (the upload, zipped here as the CDK CLI zips a directory
asset: yazl, deflate at zlib's default level, files only), the file count and the ten largest
parts: distributions for the layer (a file belongs to the distribution whose ``RECORD`` names
its top-level package; bytecode compiled after the install follows its source), first-level
directories for the code asset. MB are 10^6 bytes; Lambda's "250 MB" is 250 MiB.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import zipfile
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

from packaging.utils import canonicalize_name

# Lambda's limit on a function's unzipped code plus all its layers.
LAMBDA_UNZIPPED_LIMIT: Final = 250 * 1024 * 1024
TOP: Final = 10
# What the CDK CLI's zipDirectory does: yazl's deflate, which is zlib's default level.
_ZIP_LEVEL: Final = 6


@dataclass(frozen=True)
class TreeSize:
    unzipped_bytes: int
    zipped_bytes: int
    files: int


@dataclass(frozen=True)
class AssetSize:
    asset: str  # "code" or "layer"
    path: str  # the staged directory, relative to the repository
    unzipped_bytes: int
    zipped_bytes: int
    files: int
    top: dict[str, int]  # part -> unzipped bytes, largest first


@dataclass(frozen=True)
class AssetSizes:
    stage: str
    code: AssetSize
    layer: AssetSize

    @property
    def unzipped_total(self) -> int:
        return self.code.unzipped_bytes + self.layer.unzipped_bytes

    def as_json(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "lambda_unzipped_limit_bytes": LAMBDA_UNZIPPED_LIMIT,
            "unzipped_total_bytes": self.unzipped_total,
            "code": asdict(self.code),
            "layer": asdict(self.layer),
        }

    def lines(self) -> list[str]:
        share = self.unzipped_total / LAMBDA_UNZIPPED_LIMIT
        out = [
            f"assets of the {self.stage} synthesis (zipped as the CDK CLI zips: deflate level "
            f"{_ZIP_LEVEL}); code + layer unzipped {mb(self.unzipped_total)} = {share:.0%} "
            "of Lambda's 250 MB"
        ]
        for asset in (self.code, self.layer):
            out.append(
                f"{asset.asset:<6} {mb(asset.unzipped_bytes):>9} unzipped  "
                f"{mb(asset.zipped_bytes):>9} zipped  {asset.files:5d} files  {asset.path}"
            )
            for name, size in asset.top.items():
                part = size / asset.unzipped_bytes if asset.unzipped_bytes else 0.0
                out.append(f"         {mb(size):>9}  {part:4.0%}  {name}")
        return out


def mb(size: int) -> str:
    return f"{size / 1_000_000:.2f} MB" if size >= 100_000 else f"{size / 1000:.0f} kB"


def files_of(root: Path) -> list[Path]:
    """Every file CDK would zip (it follows symbolic links and keeps dotfiles), sorted."""
    return sorted(p for p in root.rglob("*") if p.is_file())


def zipped_size(root: Path, files: Sequence[Path] | None = None) -> int:
    """Bytes of ``root`` zipped as the CDK CLI zips a directory asset (in a temporary file)."""
    with tempfile.TemporaryFile() as handle:
        with zipfile.ZipFile(handle, "w", zipfile.ZIP_DEFLATED, compresslevel=_ZIP_LEVEL) as zf:
            for path in files if files is not None else files_of(root):
                zf.write(path, path.relative_to(root).as_posix())
        return handle.tell()


def tree_size(root: Path) -> TreeSize:
    files = files_of(root)
    return TreeSize(
        unzipped_bytes=sum(p.stat().st_size for p in files),
        zipped_bytes=zipped_size(root, files),
        files=len(files),
    )


def distribution_owners(site: Path) -> dict[str, str]:
    """First path component under ``site`` -> the distribution that installed it (RECORD)."""
    owners: dict[str, str] = {}
    for record in sorted(site.glob("*.dist-info/RECORD")):
        dist = canonicalize_name(record.parent.name.removesuffix(".dist-info").rsplit("-", 1)[0])
        for line in record.read_text(encoding="utf-8").splitlines():
            first = line.split(",", 1)[0].split("/", 1)[0]
            if first and first != "..":
                owners.setdefault(first, dist)
    return owners


def _grouped(root: Path, key: Callable[[Path], str]) -> Counter[str]:
    sizes: Counter[str] = Counter()
    for path in files_of(root):
        sizes[key(path.relative_to(root))] += path.stat().st_size
    return sizes


def distribution_of(site: Path) -> Callable[[Path], str]:
    """Path relative to ``site`` -> the distribution that owns it.

    Bytecode compiled after the install is in no RECORD: ``x/__pycache__/...`` follows ``x``,
    a top-level ``__pycache__/six.cpython-313.pyc`` follows ``six.py``."""
    owners = distribution_owners(site)

    def owner(relative: Path) -> str:
        first = relative.parts[0]
        if first == "__pycache__":
            first = relative.name.split(".", 1)[0] + ".py"
        return owners.get(first, first)

    return owner


def distribution_sizes(site: Path) -> Counter[str]:
    """Unzipped bytes per installed distribution of a ``pip install --target`` directory."""
    return _grouped(site, distribution_of(site))


def code_parts(code: Path) -> Counter[str]:
    """Unzipped bytes per first-level directory of the package(s) in the code asset; modules
    directly in a package (and their bytecode) are one part."""

    def part(relative: Path) -> str:
        if len(relative.parts) > 2 and relative.parts[1] != "__pycache__":
            return f"{relative.parts[0]}/{relative.parts[1]}/"
        return f"{relative.parts[0]}/*.py" if len(relative.parts) > 1 else relative.parts[0]

    return _grouped(code, part)


def _asset(kind: str, root: Path, parts: Counter[str]) -> AssetSize:
    size = tree_size(root)
    try:
        shown = str(root.relative_to(Path.cwd()))
    except ValueError:
        shown = str(root)
    return AssetSize(
        asset=kind,
        path=shown,
        unzipped_bytes=size.unzipped_bytes,
        zipped_bytes=size.zipped_bytes,
        files=size.files,
        top=dict(parts.most_common(TOP)),
    )


def measure(stage: str = "dev", outdir: Path | None = None) -> AssetSizes:
    """Sizes of the stage's code asset and dependencies layer (needs ``make synth-dev``)."""
    # Imported here: it loads the CDK (infra.bundling), which the helpers above do not need.
    from benchmarks import lambda_image

    code, layer = lambda_image.built_assets(stage, outdir)
    site = layer / "python"
    return AssetSizes(
        stage=stage,
        code=_asset("code", code, code_parts(code)),
        layer=_asset("layer", layer, distribution_sizes(site)),
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks.assets", description=__doc__)
    parser.add_argument("--stage", default="dev", choices=("dev", "prod"))
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    result = measure(args.stage)
    print(json.dumps(result.as_json(), indent=1) if args.json else "\n".join(result.lines()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
