"""Generate the Python contracts in `driftloop/v1/` from `proto/driftloop/v1/*.proto`.

The generated modules are committed; `tests/unit/test_contracts.py` regenerates them into a
temporary directory and fails when the committed ones are stale.
"""

from __future__ import annotations

import shutil
import tempfile
from importlib import resources
from pathlib import Path

__all__ = ["GENERATED_SUFFIXES", "REPO_ROOT", "generate", "generated_files"]

REPO_ROOT = Path(__file__).resolve().parents[2]
PROTO_ROOT = REPO_ROOT / "proto"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


class ProtoGenerationError(RuntimeError):
    """protoc rejected the .proto files."""


def _proto_files() -> list[Path]:
    return sorted((PROTO_ROOT / "driftloop" / "v1").glob("*.proto"))


def generate(out_root: Path) -> list[Path]:
    """Run protoc over every contract, writing `driftloop/v1/*_pb2*.py(i)` under `out_root`."""
    from grpc_tools import protoc

    well_known = resources.files("grpc_tools") / "_proto"
    files = _proto_files()
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *(str(f.relative_to(PROTO_ROOT)) for f in files),
    ]
    code = protoc.main(args)
    if code != 0:
        raise ProtoGenerationError(f"protoc failed with exit code {code} for {files}")
    return generated_files(out_root)


def generated_files(root: Path) -> list[Path]:
    pkg = root / "driftloop" / "v1"
    return sorted(p for p in pkg.iterdir() if p.name.endswith(GENERATED_SUFFIXES))


def regenerate_in_repo() -> list[Path]:
    """Regenerate into the repo, replacing the committed modules."""
    with tempfile.TemporaryDirectory() as tmp:
        produced = generate(Path(tmp))
        target = REPO_ROOT / "driftloop" / "v1"
        for old in generated_files(REPO_ROOT):
            old.unlink()
        written = []
        for f in produced:
            dest = target / f.name
            shutil.copyfile(f, dest)
            written.append(dest)
        return written
