"""1:N identification speed and replica start-up time at scale.

    uv run python -m benchmarks.identify_speed [--sizes 10000 100000 1000000] [--startup 100000]
        [--postgres postgresql://root@127.0.0.1:5432/test] [--report benchmarks/reports/identify_speed.json]

Galleries hold face-iom-v1 codes made by the real transform (Protector.protect_many under a fresh
tenant key) from random unit feature vectors. Transforming a million vectors takes minutes on a
small machine, so `--real` codes are transformed and larger galleries repeat them, each copy with
its IoM positions permuted (still valid codes, same statistics; the kernel's cost does not depend
on the values). Prints, per gallery size: Gallery.top time (median and best of --repeats),
templates/s, memory per template, and the single-core read-bandwidth floor measured here.

Start-up: a store with --startup live rows (sealed like the service seals them), then what a
replica does before serving: read every live row, unseal it, add it to the match index. On SQLite,
and on PostgreSQL in a scratch schema when --postgres is reachable.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from vault.audit import AuditEntry
from vault.core import Vault
from vault.hazmat.iom import pack_indices, unpack_indices
from vault.keys import KeyStore, LocalKeyFile, TenantKey
from vault.matching import Gallery, MatchIndex, agreement
from vault.profiles import CURRENT, FACE, FACE_IOM_V1, PROFILES
from vault.protection import Protector, RowIdentity
from vault.store import TemplateRow, open_store
from vault.store.base import TEMPLATE_COLUMNS, row_values
from vault.store.sql import TEMPLATE_MARKS

PROFILE = FACE_IOM_V1  # replaced by --profile in main()
TENANT = "bench"


def rss_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def real_codes(protector: Protector, key: TenantKey, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((n, PROFILE.feature_dim)).astype(np.float32)
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    return np.concatenate([protector.protect_many(key, PROFILE, features[i:i + 4096])
                           for i in range(0, n, 4096)])


def synthetic(base: np.ndarray, n: int, seed: int) -> np.ndarray:
    """n codes: the real ones, then copies with their positions permuted."""
    rng = np.random.default_rng(seed)
    parts, have = [base[:n]], min(n, len(base))
    indices = unpack_indices(base, PROFILE.hash_width)
    while have < n:
        take = min(len(base), n - have)
        permuted = indices[:take, rng.permutation(PROFILE.hash_count)]
        parts.append(pack_indices(permuted, PROFILE.hash_width))
        have += take
    return np.concatenate(parts)


def read_bandwidth(array: np.ndarray, repeats: int) -> float:
    """Bytes/s of one read pass over the array on one core (numpy's or-reduce: read-bound)."""
    flat = array.reshape(-1)
    best = min(timed(lambda: np.bitwise_or.reduce(flat)) for _ in range(repeats))
    return flat.nbytes / best


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def bench_identify(protector: Protector, base: np.ndarray, sizes: list[int], repeats: int) -> list[dict]:
    results = []
    probe = base[0]
    for n in sizes:
        codes = synthetic(base[1:], n, seed=n)
        before = rss_bytes()
        gallery = Gallery(PROFILE, 1)
        for i, code in enumerate(codes):
            gallery.add(uuid.UUID(int=i).hex, f"subject-{i}", 0, code)
        per_template = (rss_bytes() - before) / n
        times = [timed(lambda: gallery.top(probe, 5)) for _ in range(repeats)]
        row_major = min(timed(lambda: agreement(probe, codes, PROFILE.hash_count)) for _ in range(max(1, repeats // 2)))
        bandwidth = read_bandwidth(codes, repeats)
        floor = codes.nbytes / bandwidth
        result = {
            "templates": n, "top_median_ms": 1e3 * statistics.median(times), "top_best_ms": 1e3 * min(times),
            "templates_per_s": n / statistics.median(times), "agreement_row_major_best_ms": 1e3 * row_major,
            "code_bytes_per_template": PROFILE.template_bytes, "memory_bytes_per_template": per_template,
            "read_gib_per_s": bandwidth / 2**30, "bandwidth_floor_ms": 1e3 * floor,
        }
        results.append(result)
        print(f"{n:>9,} templates: top {result['top_median_ms']:7.1f} ms median ({result['top_best_ms']:.1f} best), "
              f"{result['templates_per_s'] / 1e6:6.1f} M templates/s; bandwidth floor {result['bandwidth_floor_ms']:5.1f} ms "
              f"({result['read_gib_per_s']:.1f} GiB/s); memory {per_template:.0f} B/template "
              f"({PROFILE.template_bytes} B code); agreement() on row-major codes {result['agreement_row_major_best_ms']:.1f} ms",
              flush=True)
        del gallery, codes
    return results


def fill_store(store, protector: Protector, key: TenantKey, base: np.ndarray, n: int) -> float:
    """n live rows, sealed as the service seals them, written in bulk (one transaction per 10k)."""
    codes = synthetic(base, n, seed=7)
    started = time.perf_counter()
    for start in range(0, n, 10_000):
        rows = []
        for i in range(start, min(n, start + 10_000)):
            identity = RowIdentity(TENANT, uuid.UUID(int=i).hex, f"subject-{i}", FACE, 0, PROFILE.name, 1)
            salt, sealed = protector.seal(key, identity, codes[i])
            rows.append(row_values(TemplateRow(identity.template_id, TENANT, identity.subject_id, FACE, 0,
                                               PROFILE.name, 1, salt, sealed, 1, time.time())))
        with store._transaction() as cur:
            cur.executemany(store._sql(f"INSERT INTO templates ({TEMPLATE_COLUMNS}) VALUES ({TEMPLATE_MARKS})"), rows)
    store.record(AuditEntry("Bench", TENANT, "bench", detail=f"{n} rows written in bulk"))
    return time.perf_counter() - started


def replica_start(store, protector: Protector, keys: KeyStore) -> dict:
    """What a starting replica does: read live rows, unseal (under each row's tenant key version,
    looked up once), index. Timed by phase."""
    index = MatchIndex()
    tenant_keys: dict[tuple[str, int], TenantKey] = {}
    read_s = unseal_s = add_s = 0.0
    rows = store.live_rows()
    loaded = 0
    while True:
        t0 = time.perf_counter()
        row = next(rows, None)
        t1 = time.perf_counter()
        read_s += t1 - t0
        if row is None:
            break
        profile = PROFILES[row.profile]
        identity = RowIdentity(row.tenant, row.template_id, row.subject_id, row.modality, row.finger,
                               row.profile, row.key_version)
        key = tenant_keys.get((row.tenant, row.key_version))
        if key is None:
            key = tenant_keys[(row.tenant, row.key_version)] = keys.tenant_key(row.tenant, row.key_version)
        code = protector.unseal(key, identity, profile, row.salt, row.sealed)
        t2 = time.perf_counter()
        index.add(row.tenant, row.modality, profile, row.key_version, row.template_id, row.subject_id,
                  row.finger, code)
        t3 = time.perf_counter()
        unseal_s += t2 - t1
        add_s += t3 - t2
        loaded += 1
    return {"rows": loaded, "total_s": read_s + unseal_s + add_s, "read_s": read_s, "unseal_s": unseal_s,
            "index_add_s": add_s}


def bench_startup(protector: Protector, keys: KeyStore, base: np.ndarray, n: int, postgres: str | None,
                  workdir: Path) -> list[dict]:
    results = []
    backends = [("sqlite", f"sqlite:///{workdir / 'startup.db'}")]
    schema = None
    if postgres:
        try:
            from benchmarks.postgres_scratch import scratch_schema

            schema = scratch_schema(postgres, prefix="vault_bench")
            backends.append(("postgres", schema.__enter__()))
        except Exception as error:
            print(f"PostgreSQL start-up skipped: {str(error).splitlines()[0]}")
            schema = None
    try:
        for name, url in backends:
            store = open_store(url, keys.audit_key())
            fill = fill_store(store, protector, keys.tenant_key(TENANT, 1), base, n)
            result = {"backend": name, "fill_s": fill, **replica_start(store, protector, keys)}
            # What the service itself does at start (reading overlapped with unsealing and indexing).
            started = time.perf_counter()
            loaded, _ = Vault(store, keys, extractor=None, index=MatchIndex()).load_index()
            result["service_load_s"] = time.perf_counter() - started
            assert loaded == n
            store.close()
            results.append(result)
            projected = result["service_load_s"] * 1_000_000 / n
            print(f"start-up {name:8s} {n:,} rows: Vault.load_index {result['service_load_s']:.1f} s "
                  f"(projected 1M: {projected:.0f} s); phases one after another: read {result['read_s']:.1f} + "
                  f"unseal {result['unseal_s']:.1f} + index {result['index_add_s']:.1f} s "
                  f"(unseal {1e6 * result['unseal_s'] / n:.1f} us/row)", flush=True)
    finally:
        if schema is not None:
            schema.__exit__(None, None, None)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--real", type=int, default=32_768, help="codes made by the transform itself")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--startup", type=int, default=100_000, help="rows for the start-up measurement (0: skip)")
    parser.add_argument("--postgres", default=os.environ.get("VAULT_BENCH_POSTGRES", "postgresql://root@127.0.0.1:5432/test"))
    parser.add_argument("--report", type=Path, default=Path("benchmarks/reports/identify_speed.json"))
    parser.add_argument("--profile", default=CURRENT[FACE].name, choices=sorted(PROFILES),
                        help="protection profile of the synthetic gallery (default: the current face profile)")
    args = parser.parse_args()
    global PROFILE
    PROFILE = PROFILES[args.profile]

    print(f"{os.cpu_count()} CPUs visible; numpy {np.__version__}; profile {PROFILE.name} "
          f"({PROFILE.template_bytes} B/template); one probe, one core", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        keys = LocalKeyFile(Path(tmp) / "keys.json")
        key = keys.ensure_tenant(TENANT)
        protector = Protector()
        started = time.perf_counter()
        base = real_codes(protector, key, args.real + 1, seed=1)
        print(f"{len(base):,} codes by the real transform in {time.perf_counter() - started:.1f} s", flush=True)
        report = {"identify": bench_identify(protector, base, args.sizes, args.repeats)}
        if args.startup:
            report["startup"] = bench_startup(protector, keys, base[1:], args.startup, args.postgres, Path(tmp))
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(report, indent=2))
    print(f"report: {args.report}")


if __name__ == "__main__":
    main()
