"""1:N identification speed and replica start-up time at scale.

    uv run python -m benchmarks.performance.identify_speed [--sizes 10000 100000 1000000] [--startup 100000]
        [--postgres postgresql://root@127.0.0.1:5432/test] [--report benchmarks/reports/identify_speed.json]

Galleries hold codes of --profile (default: the current face profile) made by the real transform (a
keyed projection from a random seed) from random unit feature vectors. Transforming a million vectors takes minutes on a
small machine, so `--real` codes are transformed and larger galleries repeat them, each copy with
its IoM positions permuted (still valid codes, same statistics; the kernel's cost does not depend
on the values). Prints, per gallery size: Gallery.top time (median and best of --repeats) with
the profile's prefilter (vault.templates.prefilter) and with a full scan, templates/s, memory per template,
the single-core read-bandwidth floor measured here, and FAISS's IndexBinaryFlat (exhaustive
Hamming search) over the same bytes, all in the same run.

Exactness (--exactness N): the prefilter's decisions against the full scan's, on real faces among N
distractors. The five shared face sets' SFace embeddings (benchmarks.features), each person's first
photo enrolled for half the people, the other half strangers; N distractor embeddings drawn from a
Gaussian with the real embeddings' mean and covariance (made unit length), so their agreement with
real probes spreads as real impostors' do. Every probe is searched by Identify's rule (FPIR 1% at
the gallery's size) with the prefilter and with a full scan of the same gallery: FNIR, FPIR and the
searches whose answer differs.

Start-up: a store with --startup live rows, sealed as the service seals them (server-made random
ids, each with its shred secret in a shred ledger beside the key file), then what a replica does
before serving, Vault.load_index: read every live row and its secret, unseal it, add it to the match
index, on every core the process may use (vault.startup). Timed in a fresh process, as a server
starts (its pages never touched before, its workers started from nothing), and reported as seconds
per million rows with the cores used and the CPU seconds the server process and its workers spent.
On SQLite, and on PostgreSQL in a scratch schema when --postgres is reachable. --startup-phases
adds the old row-by-row measurement (read, unseal, index one after another).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import dataclasses

import numpy as np

from vault.hazmat import iom
from vault.hazmat.iom import pack_indices, unpack_indices
from vault.templates.matching import Gallery, MatchIndex, agreement
from vault.templates.profiles import CURRENT, FACE, FACE_IOM_V1, PROFILES

# The speed and exactness sections need only numpy, numba and the matching code (they run on a
# bare machine with --startup 0); the start-up section imports the service's store and keys.

PROFILE = FACE_IOM_V1  # replaced by --profile in main()
TENANT = "bench"


def rss_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def transform(profile, rng: np.random.Generator):
    """The profile's transform under a keyed projection drawn from a random seed (as
    vault.templates.protection draws it from a tenant key): feature vectors (n, d) -> packed codes.
    Only numpy: it runs on a bare machine."""
    projection = iom.keyed_projection(profile.projection, rng.bytes(32), profile.feature_dim, profile.hash_count,
                                      profile.hash_width)

    def protect(features: np.ndarray) -> np.ndarray:
        return np.concatenate([pack_indices(iom.iom_indices(projection, features[i:i + 4096], profile.hash_width),
                                            profile.hash_width) for i in range(0, len(features), 4096)])

    return protect


def real_codes(n: int, seed: int) -> np.ndarray:
    """n codes made by the profile's transform from random unit feature vectors."""
    rng = np.random.default_rng(seed)
    protect = transform(PROFILE, rng)
    features = rng.standard_normal((n, PROFILE.feature_dim)).astype(np.float32)
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    return protect(features)


def synthetic(base: np.ndarray, n: int, seed: int) -> np.ndarray:
    """n codes: the real ones, then copies with every position's index relabelled by a random
    per-copy bijection (each bit plane XORed with random words): still valid codes, agreeing with
    the originals by chance only."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, *base.shape[1:]), dtype=np.uint64)
    for start in range(0, n, len(base)):
        take = min(len(base), n - start)
        out[start:start + take] = base[:take]
        if start:
            out[start:start + take] ^= rng.integers(0, 2**64 - 1, size=base.shape[1:], dtype=np.uint64, endpoint=True)
    return out


def read_bandwidth(array: np.ndarray, repeats: int) -> float:
    """Bytes/s of one read pass over the array on one core (numpy's or-reduce: read-bound)."""
    flat = array.reshape(-1)
    best = min(timed(lambda: np.bitwise_or.reduce(flat)) for _ in range(repeats))
    return flat.nbytes / best


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def faiss_ms(codes: np.ndarray, probe: np.ndarray, repeats: int) -> float | None:
    """FAISS IndexBinaryFlat (exhaustive Hamming k-NN, one thread) over the same code bytes: best ms."""
    try:
        import faiss
    except ImportError:
        return None
    faiss.omp_set_num_threads(1)
    flat = np.ascontiguousarray(codes).view(np.uint8).reshape(len(codes), -1)
    index = faiss.IndexBinaryFlat(flat.shape[1] * 8)
    index.add(flat)
    query = np.ascontiguousarray(probe).view(np.uint8).reshape(1, -1)
    best = min(timed(lambda: index.search(query, 5)) for _ in range(repeats))
    del index
    return 1e3 * best


def bench_identify(base: np.ndarray, sizes: list[int], repeats: int) -> list[dict]:
    results = []
    probe = base[0]
    full_scan = dataclasses.replace(PROFILE, prefilter=None)
    for n in sizes:
        before = rss_bytes()
        gallery = Gallery(PROFILE, 1)
        for start in range(0, n, 65536):
            part = range(start, min(n, start + 65536))
            gallery.add_many([uuid.UUID(int=i).hex for i in part], [f"subject-{i}" for i in part],
                             synthetic(base[1:], len(part), seed=start) if start else synthetic(base[1:], len(part), 0))
        gallery.top(probe, 5)  # the first search chooses the cohort: its memory counts too
        per_template = (rss_bytes() - before) / n
        times = [timed(lambda: gallery.top(probe, 5)) for _ in range(repeats)]
        gallery.profile = full_scan  # the same gallery searched without the prefilter
        full_times = [timed(lambda: gallery.top(probe, 5)) for _ in range(max(3, repeats // 2))]
        gallery.profile = PROFILE
        codes = gallery._codes[:n]  # interleaved rows, as the kernel reads them
        bandwidth = read_bandwidth(codes, max(3, repeats // 2))
        floor = codes.nbytes / bandwidth
        faiss_best = faiss_ms(codes, probe.T, max(1, repeats // 3)) if n <= 2_000_000 else None  # it copies them
        prefix_bytes = gallery._prefixes[:n].nbytes / n if gallery._prefix_words else 0
        result = {
            "templates": n, "top_median_ms": 1e3 * statistics.median(times), "top_best_ms": 1e3 * min(times),
            "full_scan_median_ms": 1e3 * statistics.median(full_times), "full_scan_best_ms": 1e3 * min(full_times),
            "prefilter": dataclasses.asdict(PROFILE.prefilter) if PROFILE.prefilter else None,
            "templates_per_s": n / statistics.median(times),
            "code_bytes_per_template": PROFILE.template_bytes, "prefix_bytes_per_template": prefix_bytes,
            "memory_bytes_per_template": per_template,
            "read_gib_per_s": bandwidth / 2**30, "bandwidth_floor_ms": 1e3 * floor, "faiss_binary_flat_best_ms": faiss_best,
        }
        results.append(result)
        print(f"{n:>10,} templates: top {result['top_median_ms']:7.1f} ms median ({result['top_best_ms']:.1f} best); "
              f"full scan {result['full_scan_median_ms']:.1f} ms ({result['full_scan_best_ms']:.1f} best); "
              f"read floor {result['bandwidth_floor_ms']:5.1f} ms ({result['read_gib_per_s']:.1f} GiB/s); FAISS "
              f"IndexBinaryFlat {'n/a' if faiss_best is None else f'{faiss_best:.1f} ms'}; memory {per_template:.0f} "
              f"B/template ({PROFILE.template_bytes} B code + {prefix_bytes:.0f} B prefix)", flush=True)
        del gallery, codes
    return results


def export_embeddings(path: Path) -> None:
    """The five shared face sets' SFace embeddings and their owners, to one file (for --exactness
    on a machine without ../shared)."""
    from benchmarks import data, features

    vectors, owners = [], []
    for name, load in data.FACE_SETS.items():
        f = features.load(load(), progress=False, extractor="sface")
        vectors.append(f.vectors[f.ok])
        owners += [f"{name}/{s.subject}" for s, ok in zip(f.dataset.samples, f.ok) if ok]
    np.savez_compressed(path, vectors=np.concatenate(vectors), owners=np.asarray(owners))


def exactness(embeddings: Path, distractors: int, probes: int, seed: int = 3) -> dict:
    from vault.hazmat import iom
    from vault.templates.identification import per_comparison_fmr
    from vault.templates.profiles import FACE_SFACE_V1

    profile = FACE_SFACE_V1
    if distractors < 1_000_000:
        # Keep the share of the gallery a million-template search keeps (4,096 of 1M), so a smaller
        # run tests the prefilter as selective as it is at 1M.
        scaled = max(64, round(profile.prefilter.minimum * distractors / 1_000_000))
        profile = dataclasses.replace(profile, prefilter=dataclasses.replace(
            profile.prefilter, minimum=scaled, from_rows=min(profile.prefilter.from_rows, distractors)))
        print(f"exactness: {distractors:,} distractors, so the prefilter keeps {scaled:,} rows (1M's share)")
    rng = np.random.default_rng(seed)
    saved = np.load(embeddings)
    vectors, owners = saved["vectors"].astype(np.float32), saved["owners"]
    people = np.unique(owners)
    enrolled_people = set(rng.permutation(people)[: len(people) // 2])
    first = {}
    for i, who in enumerate(owners):
        first.setdefault(who, i)
    enrol = [first[p] for p in sorted(enrolled_people)]
    mated = rng.permutation([i for i, who in enumerate(owners) if who in enrolled_people and first[who] != i])[:probes]
    strangers = rng.permutation([i for i, who in enumerate(owners) if who not in enrolled_people])[:probes]

    protect = transform(profile, rng)

    mean, cov = vectors.mean(axis=0), np.cov(vectors, rowvar=False)
    gallery = Gallery(profile, 1)
    started = time.perf_counter()
    for start in range(0, distractors, 8192):
        fake = rng.multivariate_normal(mean, cov, size=min(8192, distractors - start)).astype(np.float32)
        fake /= np.linalg.norm(fake, axis=1, keepdims=True)
        count = len(fake)
        gallery.add_many([uuid.UUID(int=start + j).hex for j in range(count)],
                         [f"distractor-{start + j}" for j in range(count)], protect(fake))
    real = protect(vectors)
    gallery.add_many([uuid.uuid4().hex for _ in enrol], [str(owners[i]) for i in enrol], real[enrol])
    print(f"exactness: gallery of {len(gallery):,} ({distractors:,} distractors, {len(enrol)} people) built in "
          f"{time.perf_counter() - started:.0f} s", flush=True)
    fmr = per_comparison_fmr(0.01, len(gallery))
    full_scan = dataclasses.replace(profile, prefilter=None)
    answers = {"prefilter": {}, "full scan": {}}
    seconds = {"prefilter": 0.0, "full scan": 0.0}
    searches = list(mated) + list(strangers)
    for name, searched_profile in (("prefilter", profile), ("full scan", full_scan)):
        gallery.profile = searched_profile
        started = time.perf_counter()
        for i in searches:
            hits = gallery.top(real[i], 1, per_comparison_fmr=fmr)
            answers[name][i] = hits[0].subject_id if hits else None
        seconds[name] = (time.perf_counter() - started) / len(searches)
    gallery.profile = profile
    result = {"distractors": distractors, "prefilter_keeps": profile.prefilter.keeps(len(gallery)),
              "enrolled_people": len(enrol), "mated_searches": len(mated),
              "stranger_searches": len(strangers), "per_comparison_fmr": fmr}
    for name, answer in answers.items():
        result[f"{name} FNIR"] = float(np.mean([answer[i] != owners[i] for i in mated]))
        result[f"{name} FPIR"] = float(np.mean([answer[i] is not None for i in strangers]))
        result[f"{name} ms a search"] = 1e3 * seconds[name]
    result["searches answered differently"] = int(sum(answers["prefilter"][i] != answers["full scan"][i]
                                                      for i in searches))
    by_set = {}
    for i in mated:
        by_set.setdefault(str(owners[i]).split("/")[0], []).append(answers["prefilter"][i] != owners[i])
    result["prefilter FNIR by set"] = {k: float(np.mean(v)) for k, v in sorted(by_set.items())}
    print("exactness: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in result.items()),
          flush=True)
    return result


def fill_store(store, protector, key, base: np.ndarray, n: int, ledger=None) -> float:
    """n live rows, sealed as the service seals them (random ids; with `ledger`, each under its own
    shred secret, kept wrapped in the ledger), written in bulk (one transaction per 10k)."""
    from vault.access.audit import AuditEntry
    from vault.custody.shredding import ShredLedger, bucket_of, wrap
    from vault.templates.protection import RowIdentity
    from vault.store import TemplateRow
    from vault.store.base import TEMPLATE_COLUMNS, row_values
    from vault.store.sql import TEMPLATE_MARKS

    codes = synthetic(base, n, seed=7)
    epochs = ledger._current_epochs(range(256)) if ledger is not None else {}
    started = time.perf_counter()
    for start in range(0, n, 10_000):
        rows, secrets = [], []
        for i in range(start, min(n, start + 10_000)):
            identity = RowIdentity(TENANT, uuid.uuid4().hex, f"subject-{i}", FACE, 0, PROFILE.name, 1)
            shred = ShredLedger.new_secret() if ledger is not None else None
            salt, sealed = protector.seal(key, identity, codes[i], shred)
            rows.append(row_values(TemplateRow(identity.template_id, TENANT, identity.subject_id, FACE, 0,
                                               PROFILE.name, 1, salt, sealed, 1, time.time())))
            if ledger is not None:
                bucket = bucket_of(identity.template_id)
                epoch, epoch_key = epochs[bucket]
                secrets.append((identity.template_id, TENANT, wrap(epoch_key, identity.template_id, TENANT, bucket,
                                                                   epoch, shred), time.time(), bucket, epoch))
        with store._transaction() as cur:
            cur.executemany(store._sql(f"INSERT INTO templates ({TEMPLATE_COLUMNS}) VALUES ({TEMPLATE_MARKS})"), rows)
        if ledger is not None:
            with ledger._database.transaction() as cur:
                cur.executemany(ledger._sql("INSERT INTO shred_secrets (template_id, tenant, secret, created_at, "
                                            "bucket, epoch) VALUES (?, ?, ?, ?, ?, ?)"), secrets)
    store.record(AuditEntry("Bench", TENANT, "bench", detail=f"{n} rows written in bulk"))
    return time.perf_counter() - started


# Run in a fresh interpreter (`python -c`): Vault.load_index as a server runs it, timed, with the CPU
# seconds of this process and of its worker processes (reaped when the load ends).
SERVICE_LOAD = """
import json, os, resource, sys, time
from vault.core import Vault
from vault.custody.keys import LocalKeyFile
from vault.custody.shredding import open_ledger
from vault.store import open_store
store_url, key_file, ledger_url = sys.argv[1:4]
keys = LocalKeyFile(key_file)
store, ledger = open_store(store_url, keys.audit_key()), open_ledger(ledger_url, keys)
vault = Vault(store, keys, extractor=None, shreds=ledger)
started, own, children = time.perf_counter(), time.process_time(), resource.getrusage(resource.RUSAGE_CHILDREN)
loaded, refused = vault.load_index()
seconds = time.perf_counter() - started
after = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"loaded": loaded, "refused": refused, "load_s": seconds, "server_cpu_s": time.process_time() - own,
                  "workers_cpu_s": after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime,
                  "peak_rss_gb": [int(line.split()[1]) for line in open("/proc/self/status")
                                  if line.startswith("VmHWM:")][0] / 2**20}))
"""


def service_load(store_url: str, key_file: Path, ledger_url: str) -> dict:
    done = subprocess.run([sys.executable, "-c", SERVICE_LOAD, store_url, str(key_file), ledger_url],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def replica_start(store, protector, keys, ledger) -> dict:
    """A replica's start-up row by row, as it was before vault.startup: read live rows (and every
    shred secret), unseal (under each row's tenant key version, looked up once), index. Timed by phase."""
    from vault.templates.protection import RowIdentity

    index = MatchIndex()
    tenant_keys: dict = {}
    started = time.perf_counter()
    secrets = ledger.secrets()
    read_s, unseal_s, add_s = time.perf_counter() - started, 0.0, 0.0
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
        code = protector.unseal(key, identity, profile, row.salt, row.sealed, secrets.get(row.template_id))
        t2 = time.perf_counter()
        index.add(row.tenant, row.modality, profile, row.key_version, row.template_id, row.subject_id,
                  row.finger, code)
        t3 = time.perf_counter()
        unseal_s += t2 - t1
        add_s += t3 - t2
        loaded += 1
    return {"rows": loaded, "total_s": read_s + unseal_s + add_s, "read_s": read_s, "unseal_s": unseal_s,
            "index_add_s": add_s}


def bench_startup(base: np.ndarray, n: int, postgres: str | None, workdir: Path, phases: bool = False) -> list[dict]:
    from vault.custody.keys import LocalKeyFile
    from vault.custody.shredding import open_ledger
    from vault.templates.protection import Protector
    from vault.store import open_store

    keys = LocalKeyFile(workdir / "keys.json")
    keys.ensure_tenant(TENANT)
    protector = Protector()
    results = []
    cores = len(os.sched_getaffinity(0))
    backends = [("sqlite", f"sqlite:///{workdir / 'startup.db'}", f"sqlite:///{workdir / 'shreds.db'}")]
    schema = None
    if postgres:
        try:
            from benchmarks.postgres_scratch import scratch_schema

            schema = scratch_schema(postgres, prefix="vault_bench")
            url = schema.__enter__()
            backends.append(("postgres", url, url))  # the ledger in the same scratch schema
        except Exception as error:
            print(f"PostgreSQL start-up skipped: {str(error).splitlines()[0]}")
            schema = None
    try:
        for name, url, ledger_url in backends:
            store, ledger = open_store(url, keys.audit_key()), open_ledger(ledger_url, keys)
            fill = fill_store(store, protector, keys.tenant_key(TENANT, 1), base, n, ledger)
            result = {"backend": name, "rows": n, "cores": cores, "fill_s": fill}
            if phases:
                result.update(replica_start(store, protector, keys, ledger))
            store.close()
            ledger.close()
            result.update(service_load(url, workdir / "keys.json", ledger_url))
            assert (result["loaded"], result["refused"]) == (n, 0)
            result["s_per_million"] = result["load_s"] * 1_000_000 / n
            result["cpu_s_per_million"] = (result["server_cpu_s"] + result["workers_cpu_s"]) * 1_000_000 / n
            results.append(result)
            print(f"start-up {name:8s} {n:,} rows on {cores} cores: Vault.load_index {result['load_s']:.1f} s = "
                  f"{result['s_per_million']:.1f} s a million (target 10); CPU {result['server_cpu_s']:.1f} s server + "
                  f"{result['workers_cpu_s']:.1f} s workers = {result['cpu_s_per_million']:.1f} core-s a million; "
                  f"server peak RSS {result['peak_rss_gb']:.2f} GB" + (
                      f"; row by row, one after another: read {result['read_s']:.1f} + unseal "
                      f"{result['unseal_s']:.1f} + index {result['index_add_s']:.1f} s" if phases else ""), flush=True)
    finally:
        if schema is not None:
            schema.__exit__(None, None, None)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="*", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--real", type=int, default=32_768, help="codes made by the transform itself")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--startup", type=int, default=100_000, help="rows for the start-up measurement (0: skip)")
    parser.add_argument("--startup-phases", action="store_true",
                        help="also time the start-up row by row (read, unseal, index one after another)")
    parser.add_argument("--postgres", default=os.environ.get("VAULT_BENCH_POSTGRES", "postgresql://root@127.0.0.1:5432/test"))
    parser.add_argument("--report", type=Path, default=Path("benchmarks/reports/identify_speed.json"))
    parser.add_argument("--exactness", type=int, default=0,
                        help="distractors for the prefilter's decisions against the full scan (0: skip)")
    parser.add_argument("--exactness-probes", type=int, default=300, help="mated and stranger searches, each")
    parser.add_argument("--embeddings", type=Path, default=None,
                        help="embeddings file for --exactness (default: exported here from ../shared)")
    parser.add_argument("--export-embeddings", type=Path, default=None,
                        help="write the shared face sets' SFace embeddings to this file and stop")
    parser.add_argument("--profile", default=CURRENT[FACE].name, choices=sorted(PROFILES),
                        help="protection profile of the synthetic gallery (default: the current face profile)")
    args = parser.parse_args()
    if args.export_embeddings:
        return export_embeddings(args.export_embeddings)
    global PROFILE
    PROFILE = PROFILES[args.profile]

    print(f"{os.cpu_count()} CPUs visible; numpy {np.__version__}; profile {PROFILE.name} "
          f"({PROFILE.template_bytes} B/template); one probe, one core", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        report = {}
        if args.sizes or args.startup:
            started = time.perf_counter()
            base = real_codes(args.real + 1, seed=1)
            print(f"{len(base):,} codes by the real transform in {time.perf_counter() - started:.1f} s", flush=True)
            report["identify"] = bench_identify(base, args.sizes, args.repeats) if args.sizes else []
        if args.exactness:
            embeddings = args.embeddings
            if embeddings is None:
                embeddings = Path(tmp) / "embeddings.npz"
                export_embeddings(embeddings)
            report["exactness"] = exactness(embeddings, args.exactness, args.exactness_probes)
        if args.startup:
            report["startup"] = bench_startup(base[1:], args.startup, args.postgres, Path(tmp), args.startup_phases)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(report, indent=2))
    print(f"report: {args.report}")


if __name__ == "__main__":
    main()
