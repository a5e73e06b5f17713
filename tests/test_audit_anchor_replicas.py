"""Replicas in containers share the key volume, and with it the audit anchor beside the key file,
and each runs as PID 1: the anchor's temporary file must not be named by the PID alone."""

from __future__ import annotations

import os
import threading

from vault.access.audit import AuditAnchor, AuditEntry, AuditRecord


def test_two_replicas_with_the_same_pid_share_the_anchor(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "getpid", lambda: 1)  # PID 1 in each container
    path = tmp_path / "keys.json.audit-head"
    replicas = [AuditAnchor(path), AuditAnchor(path)]
    errors: list[BaseException] = []

    def appender(anchor: AuditAnchor, start: int):
        try:
            for seq in range(start, start + 400, 2):
                anchor.advance(AuditRecord(seq, AuditEntry("Verify", "t", "c"), seq.to_bytes(32, "big")))
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=appender, args=(anchor, 1 + n)) for n, anchor in enumerate(replicas)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert replicas[0].head() is not None and not list(tmp_path.glob(".*.tmp"))
