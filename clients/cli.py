"""``sigstead log …``: the auditor's commands (rekor-cli equivalents) over ``clients.rekor``."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from clients.bundle import spell_out_defaults
from clients.rekor import ClientError, LogClient, VerificationFailed, VerifiedEntry, load_log_key

__all__ = ["add_log_parser", "run_log"]

DEFAULT_URL = "http://127.0.0.1:3000"


def add_log_parser(sub: Any) -> None:
    """Register ``log`` and its subcommands on an argparse subparsers object."""
    log = sub.add_parser("log", help="query and audit a transparency log (verifies everything)")
    log.add_argument(
        "--url", default=os.environ.get("SIGSTEAD_URL", DEFAULT_URL), help="log base URL"
    )
    log.add_argument(
        "--log-key", type=Path, help="PEM public key of the log (else pinned on first use)"
    )
    log.add_argument(
        "--state-dir",
        type=Path,
        default=Path(os.environ.get("SIGSTEAD_STATE_DIR", Path.home() / ".sigstead")),
        help="where pinned keys and the last seen checkpoint are kept",
    )
    log.add_argument("--json", action="store_true", help="machine-readable output")
    cmds = log.add_subparsers(dest="log_command", required=True)
    cmds.add_parser("info", help="the newest checkpoint, checked against the last one seen")
    get = cmds.add_parser("get", help="one entry, with SET and inclusion proof verified")
    which = get.add_mutually_exclusive_group(required=True)
    which.add_argument("--uuid")
    which.add_argument("--index", type=int)
    search = cmds.add_parser("search", help="find entries by artifact, digest, email or key")
    what = search.add_mutually_exclusive_group(required=True)
    what.add_argument("--artifact", type=Path)
    what.add_argument("--sha256")
    what.add_argument("--email")
    what.add_argument("--public-key", type=Path)
    proof = cmds.add_parser("proof", help="prove the tree at --last extends the tree at --first")
    proof.add_argument("--first", type=int, required=True)
    proof.add_argument("--last", type=int, required=True)
    repair = cmds.add_parser(
        "repair-bundle",
        help="write out the proto3 defaults a bundle of entry 0 lacks (docs/genesis.md), "
        "after checking its inclusion proof; offline",
    )
    repair.add_argument("bundle", type=Path, help="the Sigstore bundle to repair")
    repair.add_argument("--out", type=Path, required=True, help="where to write the repaired one")


def _entry_summary(e: VerifiedEntry) -> dict[str, Any]:
    return {
        "uuid": e.entry_id,
        "index": e.index,
        "integratedTime": datetime.fromtimestamp(e.integrated_time, UTC).isoformat(),
        "kind": e.body.get("kind"),
        "verified": ["signedEntryTimestamp", "inclusionProof", "checkpoint", "consistency"],
    }


def _print(args: argparse.Namespace, data: Any, human: str) -> None:
    print(json.dumps(data, indent=2) if args.json else human)


def _repair_bundle(args: argparse.Namespace, key_pem: bytes | None) -> int:
    try:
        document = json.loads(args.bundle.read_bytes())
    except (OSError, ValueError) as exc:
        raise ClientError(f"{args.bundle}: cannot read a JSON bundle: {exc}") from None
    log_key = None if key_pem is None else load_log_key(key_pem)
    repaired = spell_out_defaults(document, log_key=log_key)
    args.out.write_text(json.dumps(repaired.document, indent=2) + "\n")
    added = ", ".join(repaired.added) or "nothing (the bundle was complete)"
    checked = "inclusion proof and checkpoint signature" if log_key else "inclusion proof"
    _print(
        args,
        {"out": str(args.out), "added": repaired.added, "verified": checked},
        f"wrote {args.out}: added {added}; {checked} verified",
    )
    return 0


def run_log(args: argparse.Namespace) -> int:
    """Run one ``log`` subcommand; 0 on success, 1 on a verification failure or error."""
    try:
        key = args.log_key.read_bytes() if args.log_key else None
        if args.log_command == "repair-bundle":
            return _repair_bundle(args, key)
        client = LogClient(args.url, state_dir=args.state_dir, log_key=key)
        if args.log_command == "info":
            cp = client.checkpoint()
            _print(
                args,
                {
                    "origin": cp.origin,
                    "treeSize": cp.size,
                    "rootHash": cp.root.hex(),
                    "verified": True,
                },
                f"Origin: {cp.origin}\nTree size: {cp.size}\nRoot hash: {cp.root.hex()}\n"
                "Checkpoint signature and consistency with the last seen checkpoint: verified",
            )
        elif args.log_command == "get":
            entry = client.get(uuid=args.uuid, index=args.index)
            if entry is None:
                print("no such entry", file=sys.stderr)
                return 1
            summary = _entry_summary(entry)
            _print(
                args,
                {**summary, "body": entry.body},
                "\n".join(f"{k}: {v}" for k, v in summary.items())
                + "\nbody: "
                + json.dumps(entry.body, indent=2),
            )
        elif args.log_command == "search":
            query: dict[str, Any]
            if args.artifact:
                query = {"hash": "sha256:" + hashlib.sha256(args.artifact.read_bytes()).hexdigest()}
            elif args.sha256:
                query = {"hash": args.sha256 if ":" in args.sha256 else "sha256:" + args.sha256}
            elif args.email:
                query = {"email": args.email}
            else:
                import base64

                query = {
                    "publicKey": {
                        "format": "x509",
                        "content": base64.b64encode(args.public_key.read_bytes()).decode(),
                    }
                }
            found = client.search(query)
            _print(
                args,
                [_entry_summary(e) for e in found],
                "\n".join(f"{e.entry_id}  index {e.index}" for e in found) or "no entries found",
            )
        else:
            head, proof, _ = client.prove(args.first, args.last)
            _print(
                args,
                {
                    "first": args.first,
                    "last": args.last,
                    "hashes": [h.hex() for h in proof],
                    "verified": True,
                },
                f"Tree {args.last} extends tree {args.first}: verified "
                f"({len(proof)} hashes; head {head.size})",
            )
    except VerificationFailed as exc:
        print(f"VERIFICATION FAILED: {exc}", file=sys.stderr)
        return 1
    except ClientError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
