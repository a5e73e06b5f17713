"""The `vault` command: `vault serve`, and client commands that talk gRPC to a running vault."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc

DEFAULT_SERVER = os.environ.get("VAULT_SERVER", "127.0.0.1:50051")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".pgm", ".ppm", ".tif", ".tiff", ".bmp", ".iso"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vault", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the vault server (embedded SQLite + local key file by default)")
    serve.add_argument("--state-dir", type=Path, default=Path(os.environ.get("VAULT_STATE_DIR", ".vault")))
    serve.add_argument("--listen", default=os.environ.get("VAULT_LISTEN", "127.0.0.1:50051"))
    serve.add_argument("--store", default=os.environ.get("VAULT_STORE", ""), help="sqlite:///path or postgresql://...")
    serve.add_argument("--key-file", type=Path, default=None)
    serve.add_argument("--workers", type=int, default=None, help="extraction processes (default: cores)")
    serve.add_argument("--max-pending", type=int, default=None, help="samples queued before RESOURCE_EXHAUSTED")
    serve.add_argument("--allow-face-embeddings", action="store_true",
                       help="accept pre-computed 128-D face embeddings from panels")
    serve.add_argument("--port-file", type=Path, default=None)

    def client(name: str, help: str):
        command = commands.add_parser(name, help=help)
        command.add_argument("--server", default=DEFAULT_SERVER)
        return command

    def modality_args(command):
        command.add_argument("--modality", choices=["face", "fingerprint"], default="face")
        command.add_argument("--finger", type=int, default=0, help="ISO/IEC 19794-2 finger code 0-10")
        command.add_argument("--single-face", action="store_true", help="fail if several faces are found")

    enroll = client("enroll", "enrol one subject from one or more sample files")
    enroll.add_argument("--subject", required=True)
    modality_args(enroll)
    enroll.add_argument("files", nargs="+", type=Path)

    bulk = client("enroll-folder", "enrol every subject of a folder (one subfolder or file prefix per subject)")
    modality_args(bulk)
    bulk.add_argument("folder", type=Path)
    bulk.add_argument("--samples", type=int, default=1, help="samples per subject (the first N files)")
    bulk.add_argument("--limit", type=int, default=0, help="enrol at most this many subjects")
    bulk.add_argument("--parallel", type=int, default=4)

    verify = client("verify", "1:1 verification of a probe against a subject or template")
    claim = verify.add_mutually_exclusive_group(required=True)
    claim.add_argument("--subject")
    claim.add_argument("--template")
    modality_args(verify)
    verify.add_argument("file", type=Path)

    identify = client("identify", "1:N identification of a probe")
    modality_args(identify)
    identify.add_argument("--max", type=int, default=5)
    identify.add_argument("file", type=Path)

    revoke = client("revoke", "revoke a template, or every live template of a subject")
    target = revoke.add_mutually_exclusive_group(required=True)
    target.add_argument("--subject")
    target.add_argument("--template")
    revoke.add_argument("--reason", default="")

    reissue = client("reissue", "replace a template with one from new samples under a fresh salt")
    reissue.add_argument("--template", required=True)
    reissue.add_argument("--reason", default="")
    reissue.add_argument("--single-face", action="store_true")
    reissue.add_argument("files", nargs="+", type=Path)

    listing = client("list", "template metadata (never template bytes)")
    listing.add_argument("--subject", default="")
    listing.add_argument("--all", action="store_true", help="include revoked templates")

    args = parser.parse_args(argv)
    if args.command == "serve":
        return run_serve(args)
    try:
        return CLIENT_COMMANDS[args.command](args)
    except grpc.RpcError as error:
        print(f"error: {error.code().name}: {error.details()}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"error: {error.strerror}: {error.filename}", file=sys.stderr)
        return 1


def run_serve(args) -> int:
    from vault.exceptions import VaultError
    from vault.server import Settings, serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings(state_dir=args.state_dir, listen=args.listen, store_url=args.store, key_file=args.key_file,
                        workers=args.workers, max_pending=args.max_pending,
                        allow_face_embeddings=args.allow_face_embeddings, port_file=args.port_file)
    try:
        asyncio.run(serve(settings))
    except VaultError as error:
        print(f"vault: {error.message}", file=sys.stderr)
        return 2
    return 0


# -- client side --------------------------------------------------------------------------------
def _stub(args):
    from vault.v1 import vault_pb2_grpc

    return vault_pb2_grpc.VaultStub(grpc.insecure_channel(args.server))


def _pb():
    from vault.v1 import vault_pb2

    return vault_pb2


def _sample(path: Path):
    data = path.read_bytes()
    if path.suffix.lower() == ".iso" or data[:4] == b"FMR\x00":
        return _pb().Sample(iso_19794_2=data)
    return _pb().Sample(image=data)


def _modality(args) -> int:
    return _pb().FACE if args.modality == "face" else _pb().FINGERPRINT


def cmd_enroll(args) -> int:
    response = _stub(args).Enroll(_pb().EnrollRequest(
        subject_id=args.subject, modality=_modality(args), finger=args.finger,
        samples=[_sample(p) for p in args.files], require_single_face=args.single_face))
    print(f"enrolled {args.subject}: template {response.template_id} ({response.profile}, key v{response.key_version})")
    return 0


def subjects_in(folder: Path) -> dict[str, list[Path]]:
    """Subfolders are subjects (LFW, ORL); in a flat folder the file-name prefix before '_' is (FVC)."""
    subjects: dict[str, list[Path]] = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            subject = path.parent.name if path.parent != folder else path.stem.split("_")[0]
            subjects.setdefault(subject, []).append(path)
    return subjects


def cmd_enroll_folder(args) -> int:
    from tqdm import tqdm

    stub, pb = _stub(args), _pb()
    subjects = list(subjects_in(args.folder).items())
    if args.limit:
        subjects = subjects[: args.limit]

    def enrol(item):
        subject, files = item
        request = pb.EnrollRequest(subject_id=subject, modality=_modality(args), finger=args.finger,
                                   samples=[_sample(p) for p in files[: args.samples]],
                                   require_single_face=args.single_face)
        try:
            stub.Enroll(request)
            return subject, None
        except grpc.RpcError as error:
            return subject, f"{error.code().name}: {error.details()}"

    failures = []
    with ThreadPoolExecutor(args.parallel) as pool:
        for subject, problem in tqdm(pool.map(enrol, subjects), total=len(subjects), unit="subject", desc="enrol"):
            if problem:
                failures.append((subject, problem))
    print(f"enrolled {len(subjects) - len(failures)} of {len(subjects)} subjects")
    for subject, problem in failures:
        print(f"  {subject}: {problem}", file=sys.stderr)
    return 1 if failures and len(failures) == len(subjects) else 0


def cmd_verify(args) -> int:
    pb = _pb()
    claim = {"subject_id": args.subject} if args.subject else {"template_id": args.template}
    response = _stub(args).Verify(pb.VerifyRequest(**claim, modality=_modality(args), finger=args.finger,
                                                   probe=_sample(args.file), require_single_face=args.single_face))
    print(f"{pb.Decision.Name(response.decision)} (decision {response.decision_id})")
    return 0 if response.decision == pb.MATCH else 3


def cmd_identify(args) -> int:
    pb = _pb()
    response = _stub(args).Identify(pb.IdentifyRequest(modality=_modality(args), finger=args.finger,
                                                       probe=_sample(args.file), max_candidates=args.max,
                                                       require_single_face=args.single_face))
    if not response.candidates:
        print(f"no candidate (decision {response.decision_id})")
        return 3
    for candidate in response.candidates:
        print(f"{candidate.rank}. {candidate.subject_id} (template {candidate.template_id})")
    return 0


def cmd_revoke(args) -> int:
    target = {"subject_id": args.subject} if args.subject else {"template_id": args.template}
    response = _stub(args).Revoke(_pb().RevokeRequest(**target, reason=args.reason))
    for template_id in response.revoked_template_ids:
        print(f"revoked {template_id}")
    return 0


def cmd_reissue(args) -> int:
    response = _stub(args).Reissue(_pb().ReissueRequest(template_id=args.template, reason=args.reason,
                                                        samples=[_sample(p) for p in args.files],
                                                        require_single_face=args.single_face))
    print(f"reissued {response.revoked_template_id} as {response.template_id}")
    return 0


def cmd_list(args) -> int:
    pb = _pb()
    response = _stub(args).ListTemplates(pb.ListTemplatesRequest(subject_id=args.subject, include_revoked=args.all))
    for t in response.templates:
        print(f"{t.template_id}  {t.subject_id:<24} {pb.Modality.Name(t.modality):<11} "
              f"{pb.TemplateStatus.Name(t.status):<7} {t.profile} key v{t.key_version} "
              f"created {t.created_at.ToDatetime():%Y-%m-%d %H:%M:%S}"
              + (f" revoked ({t.revoke_reason})" if t.status == pb.REVOKED else ""))
    return 0


CLIENT_COMMANDS = {
    "enroll": cmd_enroll, "enroll-folder": cmd_enroll_folder, "verify": cmd_verify, "identify": cmd_identify,
    "revoke": cmd_revoke, "reissue": cmd_reissue, "list": cmd_list,
}

if __name__ == "__main__":
    sys.exit(main())
