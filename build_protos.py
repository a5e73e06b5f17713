"""Hatch build hook: compile protos/ into vault/v1/*_pb2*.py with grpcio-tools.

The generated modules are build outputs (git-ignored), never edited by hand. They are
regenerated on every build, editable installs included, so they always match protos/.
"""

from __future__ import annotations

import pathlib

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


def compile_protos(root: pathlib.Path) -> list[pathlib.Path]:
    """Compile every .proto under root/protos into root; return the generated files."""
    import grpc_tools
    from grpc_tools import protoc

    proto_root = root / "protos"
    well_known = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    sources = sorted(str(p.relative_to(proto_root)) for p in proto_root.rglob("*.proto"))
    args = [
        "grpc_tools.protoc",
        f"-I{proto_root}",
        f"-I{well_known}",
        f"--python_out={root}",
        f"--pyi_out={root}",
        f"--grpc_python_out={root}",
        *sources,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {sources}")
    return sorted(root.glob("vault/v1/*_pb2*.py"))


class CustomBuildHook(BuildHookInterface):
    def initialize(self, version, build_data):
        compile_protos(pathlib.Path(self.root))


if __name__ == "__main__":
    for path in compile_protos(pathlib.Path(__file__).parent):
        print(path)
