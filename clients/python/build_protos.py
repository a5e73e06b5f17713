"""Hatch build hook: compile the vault API (protos/vault/v1/*.proto) into vault_client/v1/.

The generated modules are build outputs (git-ignored), never edited by hand, regenerated on every
build (editable installs included) so they always match the proto. The proto's package stays
`vault.v1`; only its Python module path is `vault_client.v1`, so the client installs beside any
other package named `vault`. The server imports these same modules: one compiled API.
"""

from __future__ import annotations

import pathlib

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


def api_folder(root: pathlib.Path) -> pathlib.Path:
    """protos/vault/v1 inside an sdist, else in the repository two levels up."""
    for candidate in (root / "protos", root.parent.parent / "protos"):
        if (candidate / "vault" / "v1").is_dir():
            return candidate / "vault" / "v1"
    raise RuntimeError(f"no protos/vault/v1 beside {root} or two levels up")


def compile_protos(root: pathlib.Path) -> list[pathlib.Path]:
    """Compile every .proto of the API into root/vault_client/v1; return the generated files."""
    import grpc_tools
    from grpc_tools import protoc

    api = api_folder(root)
    well_known = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    sources = sorted(f"vault_client/v1/{p.name}" for p in api.glob("*.proto"))
    args = [
        "grpc_tools.protoc",
        f"-Ivault_client/v1={api}",  # virtual path: the modules land in vault_client/v1
        f"-I{well_known}",
        f"--python_out={root}",
        f"--pyi_out={root}",
        f"--grpc_python_out={root}",
        *sources,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {sources}")
    return sorted((root / "vault_client" / "v1").glob("*_pb2*.py"))


class CustomBuildHook(BuildHookInterface):
    def initialize(self, version, build_data):
        compile_protos(pathlib.Path(self.root))


if __name__ == "__main__":
    for path in compile_protos(pathlib.Path(__file__).parent):
        print(path)
