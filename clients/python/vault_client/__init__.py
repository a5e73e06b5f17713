"""vault_client: call a vault from a door panel, an HR system or an audit tool.

    from vault_client import Settings, TlsIdentity, VaultClient, errors, pb

    settings = Settings("vault.example:50051", tls=TlsIdentity.from_dir("pki", "door-7"))
    with VaultClient(settings) as vault:
        answer = vault.verify(Path("probe.jpg"), subject_id="alice")
        if answer.decision == pb.MATCH: ...

Installs with grpcio and protobuf only. Calls that change nothing are retried by the channel on
UNAVAILABLE; everything else that fails raises an `errors.VaultCallError` subclass (`LockedOut` and
`Overloaded` told apart).
"""

from vault_client import errors
from vault_client.client import VaultClient, sample
from vault_client.connection import Settings, TlsIdentity
from vault_client.v1 import vault_pb2 as pb

__all__ = ["VaultClient", "Settings", "TlsIdentity", "errors", "pb", "sample"]
