"""``sigstead log …``: the auditor's commands (rekor-cli equivalents) over ``clients.rekor``.

The parser is built without importing the client (``sigstead --help`` stays fast); the client
is imported when a ``log`` command runs. Every failure is a ``ClientError``, which the command
line prints as one line.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clients.errors import ClientError

if TYPE_CHECKING:
    from clients.rekor import VerifiedEntry

__all__ = ["add_log_parser", "run_log"]

DEFAULT_URL = "http://127.0.0.1:3000"
URL_ENV = "SIGSTEAD_URL"
STATE_DIR_ENV = "SIGSTEAD_STATE_DIR"

_VERIFIED = (
    "signed entry timestamp, inclusion proof, checkpoint signature, consistency with the last "
    "checkpoint seen"
)


def add_log_parser(
    sub: Any,
    formatter_class: type[argparse.HelpFormatter] = argparse.HelpFormatter,
    common: Callable[[argparse.ArgumentParser], None] = lambda _parser: None,
) -> None:
    """Register ``log`` and its subcommands on an argparse subparsers object; ``common`` adds
    the options every command of the caller's takes (``-v``)."""

    def command(parent: Any, name: str, summary: str, description: str | None = None) -> Any:
        parser = parent.add_parser(
            name, help=summary, description=description or summary, formatter_class=formatter_class
        )
        common(parser)
        parser.set_defaults(run=run_log)
        return parser

    log = command(
        sub,
        "log",
        "query and audit a transparency log (verifies everything)",
        "Query and audit a Rekor v1 log. Everything printed has been verified: signed entry "
        "timestamps, inclusion proofs, checkpoint signatures against the log key, and each new "
        "checkpoint's consistency with the last one seen. The log key is given with --log-key "
        "or pinned on first use, in a file of the state directory named after the log URL; if "
        "the operator really replaces the key, delete that file (the error names it) to pin "
        "the new one.",
    )
    log.add_argument(
        "--url",
        default=os.environ.get(URL_ENV, DEFAULT_URL),
        help=f"the log's base URL (default: ${URL_ENV}, else {DEFAULT_URL})",
    )
    log.add_argument(
        "--log-key",
        type=Path,
        metavar="FILE",
        help="PEM public key of the log, e.g. snippets/pem/rekor.pub of `sigstead trust export` "
        "(default: the key pinned on first use)",
    )
    log.add_argument(
        "--state-dir",
        type=Path,
        default=Path(os.environ.get(STATE_DIR_ENV, Path.home() / ".sigstead")),
        metavar="DIR",
        help=f"where pinned log keys and the last checkpoint seen are kept, one file per log "
        f"URL (default: ${STATE_DIR_ENV}, else ~/.sigstead)",
    )
    log.add_argument("--json", action="store_true", help="machine-readable output")
    cmds = log.add_subparsers(dest="log_command", required=True, metavar="COMMAND")
    info = command(cmds, "info", "the newest checkpoint, checked against the last one seen")
    info.add_argument(
        "--witness",
        action="append",
        default=[],
        metavar="VKEY",
        help="also show the log's witnessed checkpoint and require this witness's cosignature "
        "on it (repeatable; without it the cosigners are listed, unverified)",
    )
    get = command(cmds, "get", "one entry, with SET and inclusion proof verified")
    which = get.add_mutually_exclusive_group(required=True)
    which.add_argument("--uuid", help="the entry's UUID (entry ID)")
    which.add_argument("--index", type=int, help="the entry's log index")
    search = command(cmds, "search", "find entries by artifact, digest, email or key")
    what = search.add_mutually_exclusive_group(required=True)
    what.add_argument("--artifact", type=Path, metavar="FILE", help="entries for this file")
    what.add_argument("--sha256", metavar="HEX", help="entries for this digest (an image's too)")
    what.add_argument("--email", help="entries signed by this identity")
    what.add_argument(
        "--public-key", type=Path, metavar="FILE", help="entries signed by this PEM key or cert"
    )
    search.add_argument(
        "--rekor-version",
        type=int,
        choices=(1, 2),
        default=1,
        help="search the Rekor v2 log at the same URL instead (its key with --log-key: "
        "snippets/pem/rekor-v2.pub)",
    )
    proof = command(cmds, "proof", "prove the tree at --last extends the tree at --first")
    proof.add_argument("--first", type=int, required=True, help="the older tree size")
    proof.add_argument("--last", type=int, required=True, help="the newer tree size")
    repair = command(
        cmds,
        "repair-bundle",
        "write out the proto3 defaults a bundle of entry 0 lacks (docs/genesis.md), after "
        "checking its inclusion proof; offline",
    )
    repair.add_argument("bundle", type=Path, help="the Sigstore bundle to repair")
    repair.add_argument("--out", type=Path, required=True, help="where to write the repaired one")


def _read(path: Path, flag: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ClientError(f"{flag} {path}: {exc.strerror}") from None


def _public_key_query(path: Path) -> dict[str, Any]:
    import base64

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    pem = _read(path, "--public-key")
    try:
        serialization.load_pem_public_key(pem)
    except ValueError:
        try:
            x509.load_pem_x509_certificate(pem)
        except ValueError:
            raise ClientError(f"--public-key {path}: not a PEM public key or certificate") from None
    return {"publicKey": {"format": "x509", "content": base64.b64encode(pem).decode()}}


def _summary(e: VerifiedEntry) -> dict[str, Any]:
    if "canonicalizedBody" in e.raw:
        # A Rekor v2 entry: no integrated time and no SET (its time is in the bundle's TSA
        # timestamp); the search does not track the v2 checkpoints' consistency.
        return {
            "uuid": e.entry_id,
            "index": e.index,
            "integratedTime": None,
            "kind": e.body.get("kind"),
            "verified": ["inclusionProof", "checkpoint"],
        }
    return {
        "uuid": e.entry_id,
        "index": e.index,
        "integratedTime": datetime.fromtimestamp(e.integrated_time, UTC).isoformat(),
        "kind": e.body.get("kind"),
        "verified": ["signedEntryTimestamp", "inclusionProof", "checkpoint", "consistency"],
    }


def _human(e: VerifiedEntry) -> str:
    when = datetime.fromtimestamp(e.integrated_time, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    kind = " ".join(str(v) for v in (e.body.get("kind"), e.body.get("apiVersion")) if v)
    return "\n".join(
        [
            f"UUID:            {e.entry_id}",
            f"Index:           {e.index}",
            f"Integrated time: {when}",
            f"Kind:            {kind}",
            f"Verified:        {_VERIFIED}",
            "Body:",
            json.dumps(e.body, indent=2),
        ]
    )


def _repair_bundle(args: argparse.Namespace, key_pem: bytes | None) -> int:
    from clients.bundle import spell_out_defaults
    from clients.rekor import load_log_key

    try:
        document = json.loads(_read(args.bundle, "bundle"))
    except ValueError as exc:
        raise ClientError(f"{args.bundle}: cannot read a JSON bundle: {exc}") from None
    log_key = None if key_pem is None else load_log_key(key_pem, "--log-key", ed25519_ok=True)
    repaired = spell_out_defaults(document, log_key=log_key)
    try:
        args.out.write_text(json.dumps(repaired.document, indent=2) + "\n")
    except OSError as exc:
        raise ClientError(f"--out {args.out}: {exc.strerror}") from None
    added = ", ".join(repaired.added) or "nothing (the bundle was complete)"
    checked = "inclusion proof and checkpoint signature" if log_key else "inclusion proof"
    data = {"out": str(args.out), "added": repaired.added, "verified": checked}
    human = f"wrote {args.out}: added {added}; {checked} verified"
    print(json.dumps(data, indent=2) if args.json else human)
    return 0


def run_log(args: argparse.Namespace) -> int:
    """Run one ``log`` subcommand; 0 on success. Raises ``ClientError`` (``VerificationFailed``
    when something the log returned does not verify)."""
    from clients.rekor import LogClient

    key = _read(args.log_key, "--log-key") if args.log_key else None
    if key is not None:
        from clients.rekor import load_log_key

        # Named here; the client has the bytes. Ed25519 is a Rekor v2 key type (and any
        # bundle's, for repair-bundle), never a v1 log's.
        ed25519_ok = args.log_command == "repair-bundle" or getattr(args, "rekor_version", 1) == 2
        load_log_key(key, f"--log-key {args.log_key}", ed25519_ok=ed25519_ok)
    if args.log_command == "repair-bundle":
        return _repair_bundle(args, key)
    query: dict[str, Any] | None = None
    if args.log_command == "search":
        # Local files first: a typo must not cost a round trip (or pin a key).
        if args.artifact:
            digest = hashlib.sha256(_read(args.artifact, "--artifact")).hexdigest()
            query = {"hash": f"sha256:{digest}"}
        elif args.sha256:
            query = {"hash": args.sha256 if ":" in args.sha256 else "sha256:" + args.sha256}
        elif args.email:
            query = {"email": args.email}
        else:
            query = _public_key_query(args.public_key)
    version = getattr(args, "rekor_version", 1)
    client = LogClient(args.url, state_dir=args.state_dir, log_key=key, rekor_version=version)
    if args.log_command == "info":
        cp = client.checkpoint()
        data: Any = {"origin": cp.origin, "treeSize": cp.size, "rootHash": cp.root.hex()}
        human = (
            f"Origin:    {cp.origin}\nTree size: {cp.size}\nRoot hash: {cp.root.hex()}\n"
            "Verified:  checkpoint signature, consistency with the last checkpoint seen"
        )
        data["verified"] = True
        witnessed = client.witnessed(args.witness)
        if witnessed is not None:
            wcp, cosigners = witnessed
            data["witnessed"] = {
                "treeSize": wcp.size,
                "rootHash": wcp.root.hex(),
                "cosigners": [
                    {"name": c.name, "timestamp": c.timestamp, "verified": c.verified}
                    for c in cosigners
                ],
            }
            names = ", ".join(
                f"{c.name} ({'verified' if c.verified else 'not checked: no --witness key'})"
                for c in cosigners
            )
            human += f"\nWitnessed: size {wcp.size}, cosigned by {names or 'nobody'}"
        elif args.witness:
            raise ClientError(f"{client.url} serves no witnessed checkpoint")
    elif args.log_command == "get":
        entry = client.get(uuid=args.uuid, index=args.index)
        if entry is None:
            which = f"UUID {args.uuid}" if args.uuid else f"index {args.index}"
            raise ClientError(f"{client.url} has no entry with {which}")
        data, human = {**_summary(entry), "body": entry.body}, _human(entry)
    elif args.log_command == "search":
        assert query is not None
        found = client.search_v2(query) if version == 2 else client.search(query)
        data = [_summary(e) for e in found]
        human = "\n".join(f"{e.entry_id}  index {e.index}" for e in found) or "no entries found"
    else:
        head, proof, _ = client.prove(args.first, args.last)
        data = {
            "first": args.first,
            "last": args.last,
            "hashes": [h.hex() for h in proof],
            "verified": True,
        }
        human = (
            f"Tree {args.last} extends tree {args.first}: verified "
            f"({len(proof)} hashes; head {head.size})"
        )
    print(json.dumps(data, indent=2) if args.json else human)
    return 0
