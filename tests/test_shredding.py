"""The shred ledger on both backends (a file beside the key file; PostgreSQL for replicas):
secrets kept, read, shredded, and orphans swept once old enough."""

from __future__ import annotations


from tests.test_store import backend  # noqa: F401 (fixture)
from vault.shredding import ShredLedger, open_ledger


def ledger_for(backend, tmp_path) -> ShredLedger:  # noqa: F811
    return open_ledger(tmp_path / "keys.json.shred.db" if backend.name == "sqlite" else backend.url)


def test_secrets_are_kept_read_and_shredded(backend, tmp_path):  # noqa: F811
    ledger = ledger_for(backend, tmp_path)
    secrets = {f"t{i}": ShredLedger.new_secret() for i in range(3)}
    for template_id, secret in secrets.items():
        ledger.put(template_id, "acme", secret)
    assert ledger.secrets(["t0", "t2", "unknown"]) == {"t0": secrets["t0"], "t2": secrets["t2"]}
    assert ledger.shred(["t0", "unknown"]) == 1
    assert ledger.secrets() == {"t1": secrets["t1"], "t2": secrets["t2"]}
    assert ledger.retain({"t1"}, older_than_s=0) == 1  # t2 is no template's any more
    ledger.close()
    reopened = ledger_for(backend, tmp_path)  # what is in the ledger is on disk
    assert reopened.secrets() == {"t1": secrets["t1"]}
    reopened.close()


def test_a_shredded_secret_is_gone_from_the_file(tmp_path):
    path = tmp_path / "keys.json.shred.db"
    ledger = open_ledger(path)
    secret = ShredLedger.new_secret()
    ledger.put("t0", "acme", secret)
    ledger.shred(["t0"])
    ledger.close()
    assert secret not in path.read_bytes()  # secure_delete: overwritten, not left in a free page
