"""The checked-in bridge/wire modules are what proto/generate.py makes today.

``make proto`` followed by ``git diff --exit-code`` is the full check; these
tests catch the usual slips (a .proto edited without regenerating, a generated
file without the private-pool rewrite) in the ordinary test run.
"""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

import grpc_tools
import pytest
from google.protobuf import descriptor_pb2

ROOT = Path(__file__).resolve().parents[2]
PROTO_DIR = ROOT / "proto" / "bridge" / "wire"
WIRE_DIR = ROOT / "bridge" / "wire"
SOURCES = sorted(PROTO_DIR.glob("*.proto"))


def test_there_are_sources() -> None:
    assert len(SOURCES) >= 15


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.name)
def test_generated_files_exist_and_use_the_private_pool(source: Path) -> None:
    stem = source.stem
    for suffix in ("_pb2.py", "_pb2.pyi"):
        assert (WIRE_DIR / f"{stem}{suffix}").is_file()
    has_service = re.search(r"^service\s", source.read_text(), re.MULTILINE) is not None
    for suffix in ("_pb2_grpc.py", "_pb2_grpc.pyi"):
        assert (WIRE_DIR / f"{stem}{suffix}").is_file() == has_service
    code = (WIRE_DIR / f"{stem}_pb2.py").read_text()
    assert "from bridge.wire._pool import POOL as _POOL\n" in code
    assert "DESCRIPTOR = _POOL.AddSerializedFile(" in code
    assert "descriptor_pool" not in code


def test_no_stale_generated_files() -> None:
    stems = {p.stem for p in SOURCES}
    for path in WIRE_DIR.glob("*_pb2*.py*"):
        assert path.name.split("_pb2")[0] in stems, f"{path.name} has no .proto source"


def _default_json_name(name: str) -> str:
    """protoc's default JSON name: drop each underscore, capitalise what follows."""
    return re.sub(r"_+(.?)", lambda m: m.group(1).upper(), name)


def _normalised(file: descriptor_pb2.FileDescriptorProto) -> descriptor_pb2.FileDescriptorProto:
    # protoc fills in every json_name; Python gencode keeps only explicit ones.
    def strip(message: descriptor_pb2.DescriptorProto) -> None:
        for field in message.field:
            if field.json_name == _default_json_name(field.name):
                field.ClearField("json_name")
        for nested in message.nested_type:
            strip(nested)

    for message in file.message_type:
        strip(message)
    return file


def test_generated_descriptors_match_the_sources(tmp_path: Path) -> None:
    descriptor_set = tmp_path / "wire.pb"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-Iproto",
            f"-I{Path(grpc_tools.__file__).parent / '_proto'}",
            f"--descriptor_set_out={descriptor_set}",
            *(str(p.relative_to(ROOT)) for p in SOURCES),
        ],
        cwd=ROOT,
        check=True,
    )
    fresh = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set.read_bytes())
    assert len(fresh.file) == len(SOURCES)
    for file in fresh.file:
        module = importlib.import_module(
            file.name.removesuffix(".proto").replace("/", ".") + "_pb2"
        )
        generated = descriptor_pb2.FileDescriptorProto.FromString(module.DESCRIPTOR.serialized_pb)
        assert _normalised(generated) == _normalised(file), f"{file.name}: run `make proto`"
