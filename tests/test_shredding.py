"""The shred ledger on both backends (a file beside the key file; PostgreSQL for replicas):
secrets kept wrapped under epoch keys of the key file, read, shredded (with their bucket's epoch),
and orphans swept once old enough, only against the store the ledger belongs to."""

from __future__ import annotations

from conftest import deterministic_key_file
from tests.test_store import backend  # noqa: F401 (fixture)
from vault.custody.keys import LocalKeyFile
from vault.custody.shredding import ShredLedger, bucket_of, open_ledger


def keys_for(tmp_path) -> LocalKeyFile:
    return LocalKeyFile(deterministic_key_file(tmp_path / "keys.json"))


def ledger_for(backend, tmp_path, keys=None) -> ShredLedger:  # noqa: F811
    keys = keys or keys_for(tmp_path)
    return open_ledger(tmp_path / "keys.json.shred.db" if backend.name == "sqlite" else backend.url, keys)


def test_secrets_are_kept_read_and_shredded(backend, tmp_path):  # noqa: F811
    keys = keys_for(tmp_path)
    ledger = ledger_for(backend, tmp_path, keys)
    secrets = {f"t{i}": ShredLedger.new_secret() for i in range(3)}
    for template_id, secret in secrets.items():
        ledger.put(template_id, "acme", secret)
    assert ledger.secrets(["t0", "t2", "unknown"]) == {"t0": secrets["t0"], "t2": secrets["t2"]}
    bucket = bucket_of("t0")
    (before,) = keys.shred_epochs(bucket)
    assert ledger.shred(["t0", "unknown"]) == 1
    assert list(keys.shred_epochs(bucket)) == [before + 1]  # the epoch that wrapped t0 is destroyed
    assert ledger.secrets() == {"t1": secrets["t1"], "t2": secrets["t2"]}
    assert ledger.retain({"t1"}, "store-a", older_than_s=0) == 1  # t2 is no template's any more
    ledger.close()
    reopened = ledger_for(backend, tmp_path, keys)  # what is in the ledger is on disk
    assert reopened.secrets() == {"t1": secrets["t1"]}
    reopened.close()


def test_a_shredded_secret_is_gone_from_the_file(tmp_path):
    path = tmp_path / "keys.json.shred.db"
    ledger = open_ledger(path, keys_for(tmp_path))
    secret = ShredLedger.new_secret()
    ledger.put("t0", "acme", secret)
    assert secret not in path.read_bytes()  # wrapped under an epoch key, never in clear
    ledger.shred(["t0"])
    ledger.close()
    assert secret not in path.read_bytes()


def test_the_sweep_runs_only_against_the_store_the_ledger_belongs_to(backend, tmp_path):  # noqa: F811
    ledger = ledger_for(backend, tmp_path)
    for n in range(20):
        ledger.put(f"t{n}", "acme", ShredLedger.new_secret())
    live = {f"t{n}" for n in range(18)}
    assert ledger.retain(live, None, older_than_s=0) == 0  # an empty store (no audit trail): never
    assert ledger.retain(live, "store-a", older_than_s=0) == 2  # pairs with store-a
    assert ledger.retain(set(), "store-b", older_than_s=0) == 0  # another store: never
    assert ledger.retain(set(), "store-a", older_than_s=0) == 0  # most of the ledger at once: never
    assert len(ledger.secrets()) == 18
    ledger.close()


def test_a_ledger_from_before_epoch_keys_is_wrapped_when_opened(tmp_path):
    import sqlite3

    path = tmp_path / "keys.json.shred.db"
    old = sqlite3.connect(path)
    old.execute("CREATE TABLE shred_secrets (template_id TEXT PRIMARY KEY, tenant TEXT NOT NULL, "
                "secret BYTEA NOT NULL, created_at DOUBLE PRECISION NOT NULL)")
    secret = ShredLedger.new_secret()
    old.execute("INSERT INTO shred_secrets VALUES ('t0', 'acme', ?, 0)", (secret,))
    old.commit()
    old.close()
    ledger = open_ledger(path, keys_for(tmp_path))
    assert ledger.secrets() == {"t0": secret}
    ledger.close()
    assert secret not in path.read_bytes()


def test_an_interrupted_shredding_is_finished_at_the_next_open(tmp_path):
    keys = keys_for(tmp_path)
    ledger = open_ledger(tmp_path / "keys.json.shred.db", keys)
    secret = ShredLedger.new_secret()
    ledger.put("t0", "acme", secret)
    keys.new_shred_epochs([bucket_of("t0")])  # a crash after the new epoch, before its re-wrap
    ledger.close()
    reopened = open_ledger(tmp_path / "keys.json.shred.db", keys)
    assert len(keys.shred_epochs(bucket_of("t0"))) == 1 and reopened.secrets() == {"t0": secret}
    reopened.close()
