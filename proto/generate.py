"""Regenerate bridge/wire from proto/bridge/wire/*.proto (``make proto``).

Runs grpcio-tools' protoc from the interpreter running this script, so the
pinned grpcio-tools and mypy-protobuf in the project's virtualenv decide the
output, never whatever protoc happens to be on PATH. Paths handed to protoc are
relative to the repository root, so nothing about this machine ends up in the
generated files, and running it twice leaves ``git status`` unchanged.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import grpc_tools

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = "proto"
PACKAGE_DIR = Path("bridge") / "wire"
# google/protobuf/*.proto ship inside grpcio-tools; using those keeps the
# well-known types in step with the pinned compiler.
WKT_INCLUDE = Path(grpc_tools.__file__).resolve().parent / "_proto"
GENERATED = ("*_pb2.py", "*_pb2.pyi", "*_pb2_grpc.py", "*_pb2_grpc.pyi")

# Why the rewrite: tests and the local server load the official
# tensorflow_serving modules and bridge.wire in one process. Both declare
# tensorflow.serving.ModelSpec, tensorflow.TensorProto, ... from different
# .proto files, and the default descriptor pool refuses a second file defining
# a name it already has. So every generated module registers into the private
# pool of bridge/wire/_pool.py instead. The wire format carries field numbers,
# never pool membership, so this changes nothing a peer can see.
# The other default-pool hook, the symbol database, needs no rewrite: the
# module's own _sym_db is never used, and protobuf's builder only records the
# classes there under the upb backend. (The pure-Python backend also registers
# them in the default pool; see bridge/wire/__init__.py.)
POOL_REWRITES = (
    (
        "from google.protobuf import descriptor_pool as _descriptor_pool\n",
        "from bridge.wire._pool import POOL as _POOL\n",
    ),
    ("_descriptor_pool.Default()", "_POOL"),
)
SERVICE = re.compile(r"^\s*service\s+\w+\s*\{", re.MULTILINE)


def sources() -> list[Path]:
    """The .proto files, relative to the include root, in a fixed order."""
    include_root = ROOT / PROTO_ROOT
    return sorted(p.relative_to(include_root) for p in (include_root / PACKAGE_DIR).glob("*.proto"))


def remove_stale() -> None:
    """Delete every generated file, so a removed .proto leaves nothing behind."""
    for pattern in GENERATED:
        for path in (ROOT / PACKAGE_DIR).glob(pattern):
            path.unlink()


def plugin(name: str) -> str:
    """A protoc plugin from this interpreter's bin directory (mypy-protobuf)."""
    found = shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        raise SystemExit(f"{name} not found next to {sys.executable}; install mypy-protobuf")
    return f"--plugin={name}={found}"


def protoc(outputs: list[str], files: list[Path]) -> None:
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{WKT_INCLUDE}",
        plugin("protoc-gen-mypy"),
        plugin("protoc-gen-mypy_grpc"),
        *outputs,
        *((Path(PROTO_ROOT) / f).as_posix() for f in files),
    ]
    # A fixed argv built from this file's constants and the repo's own .proto files.
    subprocess.run(cmd, cwd=ROOT, check=True)  # noqa: S603


def use_private_pool(path: Path) -> None:
    """Point one generated _pb2.py at bridge.wire._pool.POOL (see POOL_REWRITES)."""
    text = path.read_text(encoding="utf-8")
    for old, new in POOL_REWRITES:
        # Exactly once, or the gencode changed shape and the rewrite needs a look.
        if text.count(old) != 1:
            raise SystemExit(f"{path}: expected exactly one {old.strip()!r}")
        text = text.replace(old, new)
    path.write_text(text, encoding="utf-8", newline="\n")  # same bytes on every OS


def main() -> None:
    files = sources()
    if not files:
        raise SystemExit(f"no .proto files under {PROTO_ROOT}/{PACKAGE_DIR}")
    remove_stale()
    # Messages for every file; gRPC stubs only where a service is declared, so
    # message-only files do not get empty *_pb2_grpc modules.
    protoc(["--python_out=.", "--mypy_out=."], files)
    services = [f for f in files if SERVICE.search((ROOT / PROTO_ROOT / f).read_text())]
    protoc(["--grpc_python_out=.", "--mypy_grpc_out=."], services)
    for path in sorted((ROOT / PACKAGE_DIR).glob("*_pb2.py")):
        use_private_pool(path)


if __name__ == "__main__":
    main()
