"""Propagation latency between replicas: from a template change committed through one store
connection (replica A) to the change applied by another replica's IndexSync (replica B).

    uv run python -m benchmarks.performance.replica_latency [--postgres URL] [--changes 200] [--interval 0.5]

On PostgreSQL (scratch schema) the follower is woken by NOTIFY; on SQLite it polls every --interval
seconds. Each change alternates enrol and revoke; latency = time B's callback ran - time A's commit
returned, both on this host's monotonic clock. The target is every change within 1 s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

from vault.access.audit import AuditEntry
from vault.replication import IndexSync
from vault.store import TemplateRow, open_store

AUDIT_KEY = b"b" * 32


def measure(url: str, changes: int, interval_s: float) -> list[float]:
    writer, follower = open_store(url, AUDIT_KEY), open_store(url, AUDIT_KEY)
    seen: dict[tuple[str, str], float] = {}
    arrived = threading.Condition()

    def apply(kind, row):
        with arrived:
            seen.setdefault((kind, row.template_id), time.monotonic())
            arrived.notify_all()

    sync = IndexSync(follower, apply, interval_s=interval_s)
    sync.start()
    time.sleep(0.3)  # listener connected
    latencies = []
    try:
        for i in range(changes):
            template_id = f"lat{i // 2}"
            committed_kind = "add" if i % 2 == 0 else "remove"
            if committed_kind == "add":
                writer.insert(TemplateRow(template_id, "t", "s", 1, 0, "face-iom-v1", 1, b"s" * 16, b"x", 1, time.time()),
                              AuditEntry("Enroll", "t", "bench"))
            else:
                writer.revoke("t", [template_id], "bench", AuditEntry("Revoke", "t", "bench"))
            committed = time.monotonic()
            with arrived:
                # A follower may apply an enrolment as a removal if the revocation already landed;
                # here each change waits for the previous one, so kinds arrive as committed.
                if not arrived.wait_for(lambda: (committed_kind, template_id) in seen, timeout=10):
                    raise RuntimeError(f"change {i} not applied within 10 s")
                latencies.append(max(0.0, seen[(committed_kind, template_id)] - committed))
            time.sleep(0.01)
    finally:
        sync.stop()
        writer.close()
        follower.close()
    return latencies


def summary(name: str, latencies: list[float]) -> dict:
    ordered = sorted(latencies)
    result = {"backend": name, "changes": len(ordered), "median_ms": 1e3 * statistics.median(ordered),
              "p99_ms": 1e3 * ordered[int(0.99 * (len(ordered) - 1))], "max_ms": 1e3 * ordered[-1],
              "within_1s": sum(v <= 1.0 for v in ordered) / len(ordered)}
    print(f"{name:9s} {len(ordered)} changes: median {result['median_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, "
          f"max {result['max_ms']:.1f} ms, within 1 s: {100 * result['within_1s']:.0f}%", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--postgres", default=os.environ.get("VAULT_BENCH_POSTGRES", "postgresql://root@127.0.0.1:5432/test"))
    parser.add_argument("--changes", type=int, default=200)
    parser.add_argument("--interval", type=float, default=0.5, help="IndexSync poll interval, seconds")
    parser.add_argument("--report", type=Path, default=Path("benchmarks/reports/replica_latency.json"))
    args = parser.parse_args()
    results = []
    try:
        from benchmarks.postgres_scratch import scratch_schema

        with scratch_schema(args.postgres, prefix="vault_bench") as url:
            results.append(summary("postgres", measure(url, args.changes, args.interval)))
    except Exception as error:
        print(f"PostgreSQL skipped: {str(error).splitlines()[0]}")
    with tempfile.TemporaryDirectory() as tmp:
        results.append(summary("sqlite", measure(f"sqlite:///{Path(tmp) / 'vault.db'}", args.changes, args.interval)))
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps({"interval_s": args.interval, "results": results}, indent=2))
    print(f"report: {args.report}")


if __name__ == "__main__":
    main()
