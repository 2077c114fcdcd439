"""Regenerate the gRPC modules from inference.proto: `python -m davit_runtime.protocol.generate`.

The generated files are committed; a test checks that regenerating gives identical output.
The message module registers its descriptors in a private pool rather than protobuf's default
one: tritonclient's own compiled copy of the same public protocol uses the same `inference.*`
names, and two files defining one symbol cannot share a pool, so without this a process could not
import both (tests and benchmarks do).
"""

from __future__ import annotations

import sys
from pathlib import Path

PROTO = "davit_runtime/protocol/inference.proto"
_DEFAULT_POOL = "_descriptor_pool.Default().AddSerializedFile("
_PRIVATE_POOL = "_descriptor_pool.DescriptorPool().AddSerializedFile("


def source_root() -> Path:
    """The directory holding the davit_runtime package (imports are rooted there)."""
    return Path(__file__).resolve().parents[2]


def generate(out_dir: Path) -> None:
    """Run grpc_tools.protoc, writing davit_runtime/protocol/inference_pb2*.py under out_dir."""
    from grpc_tools import protoc  # build-time tool, imported only here

    root = source_root()
    out_dir.mkdir(parents=True, exist_ok=True)
    status = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{root}",
            f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            str(root / PROTO),
        ]
    )
    if status != 0:
        raise RuntimeError(f"protoc failed with status {status}")
    messages = out_dir / "davit_runtime" / "protocol" / "inference_pb2.py"
    text = messages.read_text()
    if text.count(_DEFAULT_POOL) != 1:
        raise RuntimeError(f"{messages}: expected one default-pool registration to rewrite")
    messages.write_text(text.replace(_DEFAULT_POOL, _PRIVATE_POOL))


def main() -> int:
    generate(source_root())
    return 0


if __name__ == "__main__":
    sys.exit(main())
