"""Key custody in an HSM (vault.custody.hsm) against a real PKCS#11 module, SoftHSM2: the key file sealed
with a key that never leaves the token, and a TLS server that runs on it."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest

from vault.exceptions import KeyStoreError
from vault.custody.hsm import Pkcs11Sealer
from vault.custody.keys import LocalKeyFile


def test_the_key_file_is_sealed_by_a_key_that_never_leaves_the_token(softhsm, tmp_path):
    import pkcs11

    path = tmp_path / "keys.json"
    keys = LocalKeyFile(path, sealer=Pkcs11Sealer(softhsm))
    key = keys.ensure_tenant("acme")
    document = json.loads(path.read_text())
    assert document["sealing"] == "pkcs11-aes256gcm" and "payload" not in document
    assert key.projection.hex() not in path.read_text() and "projection" not in path.read_text()
    assert LocalKeyFile(path, sealer=Pkcs11Sealer(softhsm)).tenant_key("acme") == key  # a restart
    # The token's key is sensitive and cannot be extracted.
    token = pkcs11.lib(str(softhsm.module)).get_token(token_label="vault")
    with token.open(user_pin=softhsm.pin) as session:
        hsm_key = session.get_key(label=softhsm.key_label, object_class=pkcs11.ObjectClass.SECRET_KEY)
        assert hsm_key[pkcs11.Attribute.SENSITIVE] and not hsm_key[pkcs11.Attribute.EXTRACTABLE]


def test_a_copied_key_file_opens_nowhere_else(softhsm, tmp_path):
    path = tmp_path / "keys.json"
    LocalKeyFile(path, sealer=Pkcs11Sealer(softhsm)).ensure_tenant("acme")
    with pytest.raises(KeyStoreError, match="is sealed"):
        LocalKeyFile(path)  # the thief's copy, no HSM
    with pytest.raises(KeyStoreError, match="sealed with pkcs11"):
        LocalKeyFile(path, passphrase="guess")
    with pytest.raises(KeyStoreError, match="does not open"):  # another token (its own key of that label)
        LocalKeyFile(path, sealer=Pkcs11Sealer(dataclasses.replace(softhsm, token_label="other")))
    with pytest.raises(KeyStoreError, match="log in"):
        Pkcs11Sealer(dataclasses.replace(softhsm, pin="0000"))
    with pytest.raises(KeyStoreError, match="no key"):
        Pkcs11Sealer(dataclasses.replace(softhsm, key_label="absent"), create=False)


def test_a_tls_server_runs_on_hsm_held_keys(softhsm, tmp_path, monkeypatch):
    """The README's deployment with SoftHSM2: the server makes its key file sealed by the token,
    serves, and after a restart still matches; the file holds no key material."""
    from tests.conftest import ServerProcess, read
    from tests.test_security import Client
    from vault.custody import pki
    from vault_client.v1 import vault_pb2 as pb

    folder = tmp_path / "pki"
    pki.init_ca(folder)
    pki.issue(folder, "server", server_hosts=["localhost", "127.0.0.1"])
    for role in ("enroller", "panel"):
        pki.issue(folder, f"acme-{role}", tenant="acme", role=role)
    monkeypatch.setenv("VAULT_HSM_PIN", softhsm.pin)
    state, key_file = tmp_path / "state", tmp_path / "keys" / "keys.json"
    server = ServerProcess(state, "--tls-dir", str(folder), "--key-file", str(key_file),
                           "--hsm-module", str(softhsm.module), "--hsm-token", softhsm.token_label).start()
    try:
        photo = pb.Sample(image=read("face", "orl", "s1", "1.pgm"))
        Client(server.port, folder, "acme-enroller").call(
            "vault", "Enroll", pb.EnrollRequest(subject_id="ana", modality=pb.FACE, samples=[photo]))
        server.stop()
        assert json.loads(key_file.read_text())["sealing"] == "pkcs11-aes256gcm"
        assert not (state / "keys.json").exists()  # keys apart from the data
        server.start()
        probe = pb.Sample(image=read("face", "orl", "s1", "3.pgm"))  # scores ~8 against 1.pgm (5.pgm: 4.1-4.3, threshold ~4)
        verdict = Client(server.port, folder, "acme-panel").call(
            "vault", "Verify", pb.VerifyRequest(subject_id="ana", modality=pb.FACE, probe=probe))
        assert verdict.decision == pb.MATCH
        # The container's HEALTHCHECK: the gRPC health service through mutual TLS.
        health = subprocess.run([sys.executable, "-m", "vault.cli", "health", "--server", f"localhost:{server.port}",
                                 "--tls-dir", str(folder), "--identity", "acme-panel"],
                                capture_output=True, text=True, timeout=60)
        assert (health.returncode, health.stdout.strip()) == (0, "SERVING")
    finally:
        server.stop()
