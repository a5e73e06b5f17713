"""Key custody in a hardware security module, through PKCS#11 (python-pkcs11).

The HSM holds one AES-256 key that is generated inside it, marked sensitive and non-extractable:
it never leaves the token. The key file (vault.custody.keys.LocalKeyFile) is sealed with AES-256-GCM under a
fresh random data key per write, and that data key is encrypted by the HSM key (AES-GCM inside the
token). The vault's keys therefore exist in clear only in the server's memory: a copy of the key
file, the state directory or the whole disk opens nothing without the token and its PIN.

Tested against SoftHSM2 (Debian package `softhsm2`); any PKCS#11 module with CKM_AES_GCM works.
"""

from __future__ import annotations

import base64
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from vault.exceptions import KeyStoreError

__all__ = ["HsmConfig", "Pkcs11Sealer", "pin_from_environment"]

log = logging.getLogger("vault.hsm")

AAD = b"vault-keys/pkcs11/v1"


@dataclass(frozen=True)
class HsmConfig:
    module: Path  # the PKCS#11 library, e.g. /usr/lib/softhsm/libsofthsm2.so
    token_label: str
    pin: str
    key_label: str = "vault-key-file"


def pin_from_environment() -> str | None:
    """VAULT_HSM_PIN, or the first line of the file named by VAULT_HSM_PIN_FILE."""
    if os.environ.get("VAULT_HSM_PIN"):
        return os.environ["VAULT_HSM_PIN"]
    path = os.environ.get("VAULT_HSM_PIN_FILE")
    return Path(path).read_text().splitlines()[0] if path else None


class Pkcs11Sealer:
    """A vault.custody.keys.Sealer whose key stays in a PKCS#11 token. The key is made on first use
    (generated in the token: sensitive, non-extractable) when `create` is set."""

    name = "pkcs11-aes256gcm"

    def __init__(self, config: HsmConfig, create: bool = True):
        import pkcs11  # imported here: only HSM deployments need the PKCS#11 binding loaded

        self.config = config
        self._pkcs11 = pkcs11
        try:
            self._token = pkcs11.lib(str(config.module)).get_token(token_label=config.token_label)
        except (pkcs11.PKCS11Error, RuntimeError, OSError) as error:
            raise KeyStoreError(f"cannot open PKCS#11 token {config.token_label!r} through {config.module}: "
                                f"{type(error).__name__}") from None
        with self._session() as session:
            try:
                self._key(session)
            except pkcs11.NoSuchKey:
                if not create:
                    raise KeyStoreError(f"no key {config.key_label!r} in token {config.token_label!r}") from None
                session.generate_key(pkcs11.KeyType.AES, 256, label=config.key_label, store=True, template={
                    pkcs11.Attribute.SENSITIVE: True, pkcs11.Attribute.EXTRACTABLE: False,
                    pkcs11.Attribute.ENCRYPT: True, pkcs11.Attribute.DECRYPT: True})
                log.warning("generated key %r in PKCS#11 token %r (non-extractable)", config.key_label,
                            config.token_label)

    def seal(self, plain: bytes) -> dict:
        data_key, nonce = AESGCM.generate_key(256), secrets.token_bytes(12)
        wrap_nonce = secrets.token_bytes(12)
        with self._session() as session:
            wrapped = self._key(session).encrypt(data_key, mechanism=self._pkcs11.Mechanism.AES_GCM,
                                                 mechanism_param=self._gcm(wrap_nonce))
        return {"key_label": self.config.key_label, "wrap_nonce": _b64(wrap_nonce), "wrapped_key": _b64(wrapped),
                "nonce": _b64(nonce), "sealed": _b64(AESGCM(data_key).encrypt(nonce, plain, AAD))}

    def open(self, document: dict) -> bytes:
        try:
            with self._session() as session:
                data_key = self._key(session).decrypt(_unb64(document["wrapped_key"]),
                                                      mechanism=self._pkcs11.Mechanism.AES_GCM,
                                                      mechanism_param=self._gcm(_unb64(document["wrap_nonce"])))
            return AESGCM(bytes(data_key)).decrypt(_unb64(document["nonce"]), _unb64(document["sealed"]), AAD)
        except KeyStoreError:
            raise
        except Exception:
            raise KeyStoreError("the key file does not open with this HSM key (another token or key, or the "
                                "file was altered)") from None

    def describe(self) -> str:
        return f"PKCS#11 key {self.config.key_label!r}"

    def _session(self):
        try:
            return self._token.open(user_pin=self.config.pin, rw=True)
        except self._pkcs11.PKCS11Error as error:
            raise KeyStoreError(f"cannot log in to PKCS#11 token {self.config.token_label!r}: "
                                f"{type(error).__name__} (check VAULT_HSM_PIN_FILE)") from None

    def _key(self, session):
        return session.get_key(object_class=self._pkcs11.ObjectClass.SECRET_KEY, key_type=self._pkcs11.KeyType.AES,
                               label=self.config.key_label)

    def _gcm(self, nonce: bytes):
        from pkcs11.mechanisms import GCMParams

        return GCMParams(nonce, AAD, 128)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)
