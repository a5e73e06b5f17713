"""A door panel: a badge names the person, the camera takes a photo, the vault decides.

    python panel.py --server vault.example:50051 --tls-dir pki --identity door-7 --badge alice photo.jpg

Prints OPEN or CLOSED and exits 0 or 3. The door fails closed: a stranger, a lockout, a vault that
cannot be reached or does not answer in time all keep it shut. A full queue (Overloaded) is worth
a short wait and one more try; a lockout is not (retrying only extends it).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from vault_client import Settings, TlsIdentity, VaultClient, errors, pb


def decide(vault: VaultClient, badge: str, photo: Path, modality: str) -> str:
    """OPEN or a reason to stay closed."""
    for attempt in range(2):
        try:
            answer = vault.verify(photo, subject_id=badge, modality=modality)
            return "OPEN" if answer.decision == pb.MATCH else f"CLOSED: not {badge} (decision {answer.decision_id})"
        except errors.Overloaded:
            time.sleep(0.5 * (attempt + 1))
        except errors.LockedOut:
            return "CLOSED: too many failed attempts, please see reception"
        except errors.PoorSample as error:
            return f"CLOSED: {error.details} - please try again"
        except (errors.Unavailable, errors.DeadlineExceeded):
            return "CLOSED: the vault cannot be reached"
        except errors.NotFound:
            return f"CLOSED: {badge} is not enrolled"
    return "CLOSED: the vault is busy"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", default="127.0.0.1:50051", help="the vault's host:port (default: %(default)s)")
    parser.add_argument("--tls-dir", type=Path, help="folder with ca.crt and IDENTITY.crt/.key (omit: plaintext)")
    parser.add_argument("--identity", default="panel", help="the panel's certificate name (default: %(default)s)")
    parser.add_argument("--token", help="API token, if the site gives panels one")
    parser.add_argument("--modality", choices=["face", "fingerprint"], default="face", help="default: %(default)s")
    parser.add_argument("--badge", required=True, help="the subject id the badge carries")
    parser.add_argument("photo", type=Path, help="the camera's image (a file here)")
    args = parser.parse_args()
    tls = TlsIdentity.from_dir(args.tls_dir, args.identity) if args.tls_dir else None
    with VaultClient(Settings(args.server, tls=tls, token=args.token, timeout_s=5.0)) as vault:
        verdict = decide(vault, args.badge, args.photo, args.modality)
    print(verdict)
    return 0 if verdict == "OPEN" else 3


if __name__ == "__main__":
    sys.exit(main())
