"""Fast tier: the layout's rules, read from the source's imports (every import, lazy ones too).

- no import cycle inside the product package;
- the product imports neither benchmarks nor tests (research data stays outside it);
- the core (vault.core, vault.administration, the store and all they reach) is free of gRPC and protobuf:
  only vault.rpc and the server assembly know about them.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "vault"


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package_root: Path = PACKAGE) -> dict[str, set[str]]:
    """{module: modules it imports} over a package's source (generated stubs excluded)."""
    graph: dict[str, set[str]] = {}
    for path in sorted(package_root.rglob("*.py")):
        name = module_name(path, package_root.parent)
        if name.split(".")[-1].endswith(("_pb2", "_pb2_grpc")):
            continue
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
                targets.add(base)
                targets |= {f"{base}.{alias.name}" for alias in node.names}  # `from vault import x`
        graph[name] = targets
    return graph


def internal(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    return {m: {t for t in targets if t in graph and t != m} for m, targets in graph.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def reachable(graph: dict[str, set[str]], start: list[str]) -> set[str]:
    seen, todo = set(), list(start)
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo += graph.get(module, ())
    return seen


def test_no_import_cycles():
    assert cycles(internal(import_graph())) == []


def test_the_product_imports_neither_benchmarks_nor_tests():
    offenders = {m: sorted(t for t in targets if t.split(".")[0] in ("benchmarks", "tests", "conftest"))
                 for m, targets in import_graph().items()}
    assert {m: t for m, t in offenders.items() if t} == {}


def test_the_core_is_free_of_grpc_and_protobuf():
    graph = import_graph()
    core = reachable(internal(graph), ["vault.core", "vault.administration", "vault.store"])
    assert "vault.core" in core and "vault.store.sql" in core
    leaks = {m: sorted(t for t in graph[m] if t.split(".")[0] in ("grpc", "google") or t.startswith(("vault_client", "vault.rpc")))
             for m in core}
    assert {m: t for m, t in leaks.items() if t} == {}


def test_the_client_package_needs_only_grpc_and_protobuf():
    """vault-client installs with grpcio and protobuf alone: it imports nothing else outside the
    standard library (and never the server's `vault` package)."""
    import sys

    graph = import_graph(ROOT / "clients" / "python" / "vault_client")
    assert "vault_client.client" in graph
    outside = {t.split(".")[0] for targets in graph.values() for t in targets} - {"vault_client", "__future__"}
    assert "grpc" in outside and outside - set(sys.stdlib_module_names) <= {"grpc", "google"}


def role_members(role) -> set[str]:
    """The methods and attributes a typing.Protocol names, its bases' included."""
    import typing

    return {name for cls in role.__mro__ if cls not in (object, typing.Protocol, typing.Generic)
            for name in [*vars(cls), *getattr(cls, "__annotations__", {})] if not name.startswith("_")}


def store_uses(path: Path, holder: str) -> set[str]:
    """What a module reads of the store it holds as `self.<holder>` or a plain `<holder>`."""
    used = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute):
            value = node.value
            if (isinstance(value, ast.Attribute) and value.attr == holder and isinstance(value.value, ast.Name)
                    and value.value.id == "self") or (isinstance(value, ast.Name) and value.id == holder):
                used.add(node.attr)
    return used


def test_each_part_uses_only_its_store_role():
    """The store is seen through small roles (vault.store.base): each part of the vault reads only
    the methods of the role it is typed with, and SqlStore implements every role."""
    from vault.administration import AdminStore
    from vault.core import VaultStore
    from vault.store import base

    parts = {"vault/access/tokens.py": ("store", base.Tokens), "vault/replication.py": ("store", base.ChangeFeed),
             "vault/access/lockout.py": ("attempts", base.Attempts), "vault/rpc/interceptor.py": ("audit_store", base.AuditTrail),
             "vault/custody/backup.py": ("store", base.Backups), "vault/core.py": ("store", VaultStore),
             "vault/administration.py": ("store", AdminStore)}
    outside = {part: sorted(store_uses(ROOT / part, holder) - role_members(role))
               for part, (holder, role) in parts.items()}
    assert {part: names for part, names in outside.items() if names} == {}
    assert all(store_uses(ROOT / part, holder) for part, (holder, _) in parts.items())
    every = role_members(base.TemplateStore)
    assert every == set().union(*(role_members(r) for r in (base.Templates, base.Tokens, base.ChangeFeed,
                                                             base.Attempts, base.AuditTrail, base.Backups,
                                                             base.TenantGroups))) | {"close"}


def test_the_readmes_name_the_calls_the_client_retries():
    """The client's retry policy and both READMEs agree on which calls the channel repeats."""
    import re
    import sys

    sys.path.insert(0, str(ROOT / "clients" / "python"))
    from vault_client.connection import _RETRIED

    retried = {method for methods in _RETRIED.values() for method in methods}
    for readme in (ROOT / "README.md", ROOT / "clients" / "python" / "README.md"):
        text = " ".join(readme.read_text().split())
        named = set(re.findall(r"\b(Verify|Identify|ListTemplates|Revoke|RevokeToken|Enroll|Reissue|CreateToken|"
                               r"RotateKey|DestroyKeyVersion)\b", text[text.index("safe to repeat"):][:500]))
        assert retried & named == retried - {"ListTokens", "KeyStatus", "ReadAudit", "VerifyAudit"}, readme
        assert "retry calls that change nothing" not in text and "retries calls that change nothing" not in text


def test_extraction_defaults_to_the_current_profiles_extractors():
    """vault.intake.extraction reads its default extractors from vault.modalities (not from the profiles, a
    wing above it): they must be the current profiles' own."""
    from vault.modalities import CURRENT_EXTRACTORS
    from vault.templates.profiles import CURRENT

    assert CURRENT_EXTRACTORS == {modality: profile.features for modality, profile in CURRENT.items()}


# -- the wings (issue 26): vault/ and benchmarks/ grouped by what they are for -----------------------
# vault/: each wing may import the base and the wings named here, nothing above it. Lowest first.
BASE = {"vault", "vault.exceptions", "vault.modalities", "vault.private_files", "vault.logs"}
GROUPS = {"core": ("vault.core", "vault.administration", "vault.replication", "vault.startup"),
          "server": ("vault.server", "vault.metrics"), "cli": ("vault.cli",)}
WINGS = {
    "hazmat": set(),  # the raw keyed transform, dangerous on its own
    "access": set(),  # identities and roles, tokens, the lockout rule, the audit chain
    "store": {"access"},  # the store's roles in SQL, SQLite and PostgreSQL; it implements access's roles
    "custody": {"access", "store"},  # keys, HSM, shred ledger, backups, PKI
    "intake": set(),  # decoding samples, feature extraction and its worker pool
    "templates": {"hazmat", "intake", "custody"},  # profiles, protection, matching and its statistics
    "core": {"hazmat", "intake", "templates", "custody", "access", "store"},  # the application, no protobuf
    "rpc": {"core", "intake", "access", "store"},  # the interceptor and the servicers: protobuf in, core, protobuf out
    "server": {"hazmat", "intake", "templates", "custody", "access", "store", "core", "rpc"},
    "cli": {"hazmat", "intake", "templates", "custody", "access", "store", "core", "rpc", "server"},
}
TOP_LEVEL = {"vault.__init__", *BASE - {"vault"}, *(m for group in GROUPS.values() for m in group)}


def wing_of(module: str) -> str:
    if module in BASE:
        return "base"
    for group, members in GROUPS.items():
        if module in members:
            return group
    return module.split(".")[1]


def test_each_wing_imports_only_the_wings_below_it():
    graph = internal(import_graph())
    assert {wing_of(m) for m in graph} - {"base", "models"} == set(WINGS), "a module outside every wing"
    climbs = sorted(f"{m} -> {t}" for m, targets in graph.items() for t in targets
                    if wing_of(t) not in ({"base", wing_of(m)} | WINGS[wing_of(m)]))
    assert climbs == []


def test_vault_has_no_flat_rooms():
    """Beside the wings' packages, vault/ holds only the base and the assembly (core, server, cli)."""
    flat = {f"vault.{p.stem}" for p in PACKAGE.glob("*.py")}
    packages = {p.name for p in PACKAGE.iterdir() if p.is_dir() and not p.name.startswith("__")}
    assert flat == TOP_LEVEL | {"vault.__init__"} and packages == set(WINGS) - set(GROUPS) | {"models"}


# benchmarks/: four wings; the shared helpers at the top import none of them.
BENCHMARK_WINGS = {"calibration", "evaluation", "performance", "drills"}


def test_benchmarks_are_in_wings_and_their_helpers_import_none():
    graph = internal(import_graph(ROOT / "benchmarks"))
    helpers = {m for m in graph if m.count(".") == 1 and m.split(".")[1] not in BENCHMARK_WINGS}
    assert {m.split(".")[1] for m in graph if m.count(".") == 2} == BENCHMARK_WINGS
    assert helpers <= {"benchmarks.__main__", "benchmarks.data", "benchmarks.features", "benchmarks.metrics",
                       "benchmarks.scores", "benchmarks.transcript", "benchmarks.postgres_scratch"}
    assert {h: sorted(t for t in graph[h] if t.count(".") == 2) for h in helpers
            if h != "benchmarks.__main__" and any(t.count(".") == 2 for t in graph[h])} == {}


def test_calibrated_values_live_beside_the_models_not_in_code():
    """Issue 26: what calibration measures (thresholds, score models, cohort references, priors) is
    read from vault/models/calibration.json; profiles.py writes only what is designed."""
    import json

    from vault.templates.profiles import PROFILES, calibrated

    recorded = json.loads((ROOT / "vault" / "models" / "calibration.json").read_text())
    assert set(recorded) == set(PROFILES)
    for name, profile in PROFILES.items():
        for field, value in calibrated(name).items():
            assert getattr(profile, field) == value, (name, field)
    source = ast.parse((ROOT / "vault" / "templates" / "profiles.py").read_text())
    measured = {"threshold", "fused_threshold", "cohort_reference", "template_cohort_reference", "score_models",
                "score_norm", "calibration"}
    written = [keyword.arg for node in ast.walk(source) if isinstance(node, ast.Call)
               for keyword in node.keywords if keyword.arg in measured]
    assert not written, f"calibrated fields written in profiles.py: {written}"
