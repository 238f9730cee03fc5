"""The ``sigstead`` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import os
import signal
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

from aiohttp import web
from cryptography import x509

from clients.bench import add_bench_parser, run_bench
from clients.cli import add_log_parser, run_log
from clients.errors import ClientError
from services.app import COMPONENTS, DEFAULT_MAX_BODY, Settings, create_app
from services.backup import BackupError, backup
from services.ca import devissuer
from services.ca.keys import CAKeyError, load_chain
from services.ca.pkcs11 import Pkcs11KeyConfig
from services.db import Database
from services.migrate import upgrade
from services.trust.material import MissingKeysError, describe, gather
from services.trust.publish import NotPublishedError, TrustOptions, export
from services.tsa import keys as tsa_keys

__all__ = ["main"]

# The environment is the place for a URL with a password in it: the command line is visible to
# every local user.
DATABASE_URL_ENV = "SIGSTEAD_DATABASE_URL"


async def _db_upgrade(url: str) -> None:
    db = Database(url)
    try:
        await upgrade(db)
    finally:
        await db.dispose()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sigstead", description="A private Sigstore.")
    parser.add_argument("--version", action="version", version=version("sigstead"))
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    db = sub.add_parser("db", help="database maintenance")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    up = db_sub.add_parser("upgrade", help="migrate a database to the newest schema")
    up.add_argument(
        "--database-url",
        default=os.environ.get(DATABASE_URL_ENV),
        required=DATABASE_URL_ENV not in os.environ,
        help=f"sqlite:///PATH or postgresql://USER@HOST/DB (default: ${DATABASE_URL_ENV})",
    )
    run = sub.add_parser("up", help="run every sigstead service on one port")
    run.add_argument("--data-dir", type=Path, default=Path("sigstead-data"), help="keys + SQLite")
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, default=3000)
    run.add_argument(
        "--public-url",
        help="the URL clients use (default http://HOST:PORT); its host names the checkpoints",
    )
    run.add_argument(
        "--database-url",
        default=os.environ.get(DATABASE_URL_ENV),
        help=f"postgresql://USER@HOST/DB (default: ${DATABASE_URL_ENV}, else SQLite in the data "
        "dir); the password from PGPASSWORD or ~/.pgpass keeps it out of the process list",
    )
    run.add_argument(
        "--max-body", type=int, default=DEFAULT_MAX_BODY, help="request body limit in bytes"
    )
    run.add_argument("--access-log", action="store_true", help="log every request")
    run.add_argument(
        "--oidc-config",
        type=Path,
        help="Fulcio-format OIDC issuer config (JSON or YAML); enables the CA and its CT log",
    )
    run.add_argument(
        "--operator", help="operator name in the published trust documents (default: the host)"
    )
    run.add_argument(
        "--oidc-url",
        action="append",
        default=[],
        help="an IdP for interactive sign-in, listed in the published signing config (repeatable)",
    )
    # The CA key defaults to a root + intermediate generated in the data dir. Secrets never go
    # on the command line (every local user can read it in ps): files or environment only.
    run.add_argument(
        "--ca-key",
        type=Path,
        metavar="FILE",
        help="the CA's own PEM private key (mode 0600), with --ca-chain; password, if any, from "
        "SIGSTEAD_CA_KEY_PASSWORD or --ca-key-password-file",
    )
    run.add_argument(
        "--ca-key-password-file", type=Path, metavar="FILE", help="file holding --ca-key's password"
    )
    run.add_argument(
        "--ca-chain",
        type=Path,
        metavar="FILE",
        help="PEM chain for --ca-key or the PKCS#11 key: the signing certificate first, root last",
    )
    run.add_argument(
        "--ca-pkcs11-module",
        type=Path,
        metavar="FILE",
        help="PKCS#11 module (.so) whose token holds the CA key; with --ca-pkcs11-token, "
        "--ca-pkcs11-key-label or -id, and --ca-chain; PIN from SIGSTEAD_PKCS11_PIN or "
        "--ca-pkcs11-pin-file",
    )
    run.add_argument("--ca-pkcs11-token", metavar="LABEL", help="the token's label")
    run.add_argument("--ca-pkcs11-key-label", metavar="LABEL", help="the private key's label")
    run.add_argument(
        "--ca-pkcs11-key-id", metavar="HEX", type=bytes.fromhex, help="the private key's CKA_ID"
    )
    run.add_argument(
        "--ca-pkcs11-pin-file", type=Path, metavar="FILE", help="file holding the token's user PIN"
    )
    serve = sub.add_parser("serve", help="run one service alone (production layout)")
    serve.add_argument("component", choices=COMPONENTS)
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="tsa only: processes sharing the port (SO_REUSEPORT); the TSA is stateless",
    )
    for action in run._actions:
        if action.dest != "help":
            serve._add_action(action)
    trust = sub.add_parser("trust", help="trust distribution")
    trust_sub = trust.add_subparsers(dest="trust_command", required=True)
    exp = trust_sub.add_parser(
        "export",
        help="write trusted_root.json, signing_config.v0.2.json, the client trust config, the "
        "TUF repository and consumer snippets",
    )
    exp.add_argument("--data-dir", type=Path, default=Path("sigstead-data"))
    exp.add_argument(
        "--public-url",
        required=True,
        help="the URL clients use: the same as the server's --public-url (or http://HOST:PORT)",
    )
    exp.add_argument("--out", type=Path, required=True, help="directory to write into")
    exp.add_argument(
        "--operator", help="the server's --operator, if it was given (default: the host)"
    )
    exp.add_argument(
        "--ca-chain",
        type=Path,
        help="the CA chain the server was given (key file or PKCS#11 CA); default: DIR/ca",
    )
    exp.add_argument(
        "--oidc-url",
        action="append",
        default=[],
        help="the server's --oidc-url flags, if any (repeatable)",
    )
    exp.add_argument(
        "--init",
        action="store_true",
        help="create the keys if the data directory has none yet (to export before the first "
        "start); without it a missing key is an error",
    )
    exp.add_argument("--identity", help="signer identity (SAN) to write into policy snippets")
    exp.add_argument("--issuer", help="OIDC issuer to write into policy snippets")
    dev = sub.add_parser(
        "dev-issuer",
        help="a local OIDC issuer for trying sigstead out (never list it in production)",
    )
    dev_sub = dev.add_subparsers(dest="dev_command", required=True)
    dev_init = dev_sub.add_parser("init", help="create its key and print the CA config path")
    dev_init.add_argument("--dir", type=Path, default=Path("dev-issuer"))
    dev_init.add_argument("--issuer", default=devissuer.DEFAULT_ISSUER)
    dev_token = dev_sub.add_parser("token", help="print a 10-minute ID token")
    dev_token.add_argument("--dir", type=Path, default=Path("dev-issuer"))
    dev_token.add_argument("--email", required=True)
    keys = sub.add_parser("keys", help="key material")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    keys_init = keys_sub.add_parser(
        "init",
        help="create every missing key in the data directory (log, CT log, CA, TSA), once, "
        "before services that share it start; print what it holds",
    )
    keys_init.add_argument("--data-dir", type=Path, default=Path("sigstead-data"))
    keys_init.add_argument(
        "--ca-chain",
        type=Path,
        help="the CA chain the server is given (key file or PKCS#11 CA): no CA is generated",
    )
    bak = sub.add_parser(
        "backup",
        help="copy the keys, the TUF repository and a SQLite database, online, into a new "
        "directory that is itself a data directory (PostgreSQL: pg_dump, docs/deploy.md)",
    )
    bak.add_argument("--data-dir", type=Path, default=Path("sigstead-data"))
    bak.add_argument("--out", type=Path, required=True, help="the backup: a new directory")
    bak.add_argument(
        "--database-url",
        default=os.environ.get(DATABASE_URL_ENV),
        help=f"the server's (default: ${DATABASE_URL_ENV}, else SQLite in the data dir); a "
        "PostgreSQL database is left to pg_dump",
    )
    add_log_parser(sub)
    add_bench_parser(sub)
    return parser


def _serve_one(settings: Settings, host: str, port: int) -> None:
    app = create_app(settings, components=("tsa",))
    web.run_app(app, host=host, port=port, print=None, reuse_port=True, access_log=None)


def _serve_workers(settings: Settings, host: str, port: int, workers: int) -> int:
    """Run ``workers`` TSA processes on one port; SIGTERM/SIGINT stop them all."""
    # Create the key material once, before forking, so first start cannot race on it.
    tsa_keys.load_or_create(settings.data_dir / "tsa", datetime.now(UTC))
    procs = [
        multiprocessing.Process(target=_serve_one, args=(settings, host, port), daemon=True)
        for _ in range(workers)
    ]
    for proc in procs:
        proc.start()

    def stop(signum: int, _frame: object) -> None:
        for proc in procs:
            if proc.pid is not None:
                os.kill(proc.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for proc in procs:
        proc.join()
    return max((proc.exitcode or 0) for proc in procs)


def _chain(path: Path | None) -> tuple[x509.Certificate, ...] | None:
    """The PEM chain an operator names with --ca-chain, if any."""
    try:
        return None if path is None else load_chain(path)
    except CAKeyError as exc:
        raise SystemExit(f"sigstead: {exc}") from None


def _ca_pkcs11(args: argparse.Namespace) -> Pkcs11KeyConfig | None:
    if args.ca_pkcs11_module is None:
        named = [args.ca_pkcs11_token, args.ca_pkcs11_key_label, args.ca_pkcs11_key_id]
        if any(named) or args.ca_pkcs11_pin_file:
            raise SystemExit("--ca-pkcs11-* flags need --ca-pkcs11-module")
        return None
    try:
        return Pkcs11KeyConfig(
            module=args.ca_pkcs11_module,
            token_label=args.ca_pkcs11_token or "",
            key_label=args.ca_pkcs11_key_label,
            key_id=args.ca_pkcs11_key_id,
            pin_file=args.ca_pkcs11_pin_file,
        )
    except CAKeyError as exc:
        raise SystemExit(f"sigstead: {exc}") from None


def _backup(args: argparse.Namespace) -> int:
    try:
        made = backup(args.data_dir, args.out, database_url=args.database_url)
    except BackupError as exc:
        raise SystemExit(f"sigstead: not backed up: {exc}") from None
    print(f"wrote {made.path}: {len(made.files)} key and TUF files")
    if made.database is None:
        print("database: not SQLite; back it up now with pg_dump (docs/deploy.md)")
    else:
        trees = ", ".join(f"{origin!r} at size {size}" for origin, size in made.trees)
        print(f"database: {made.database.name} ({trees or 'no tree yet'})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the process exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if args.command in ("up", "serve"):
        public_url = args.public_url or f"http://{args.host}:{args.port}"
        settings = Settings(
            data_dir=args.data_dir,
            public_url=public_url,
            database_url=args.database_url,
            max_body=args.max_body,
            oidc_config=args.oidc_config,
            ca_key=args.ca_key,
            ca_key_password_file=args.ca_key_password_file,
            ca_chain=args.ca_chain,
            ca_pkcs11=_ca_pkcs11(args),
            operator=args.operator,
            oidc_urls=tuple(args.oidc_url),
        )
        if (settings.ca_key or settings.ca_chain or settings.ca_pkcs11) and not args.oidc_config:
            raise SystemExit("the --ca-* flags need --oidc-config: without it the CA is off")
        # run_app stops accepting on SIGTERM/SIGINT, lets in-flight requests finish, then runs
        # the cleanup contexts: the sequencer commits what is queued and the database closes.
        components = COMPONENTS if args.command == "up" else (args.component,)
        workers = getattr(args, "workers", 1)
        if workers > 1:
            if components != ("tsa",):
                raise SystemExit("--workers applies to `serve tsa` only (the log has one writer)")
            return _serve_workers(settings, args.host, args.port, workers)
        app = create_app(settings, components=components)
        # Per-request access lines cost about a third of TSA throughput (bench/bench_tsa.py);
        # they are opt-in.
        access_log = logging.getLogger("aiohttp.access") if args.access_log else None
        try:
            web.run_app(app, host=args.host, port=args.port, print=None, access_log=access_log)
        except CAKeyError as exc:
            # An unusable CA key is the operator's to fix: the reason, without a traceback.
            raise SystemExit(f"sigstead: CA key: {exc}") from None
        return 0
    if args.command == "log":
        return run_log(args)
    if args.command == "bench":
        try:
            return run_bench(args)
        except ClientError as exc:
            raise SystemExit(f"sigstead bench: {exc}") from None
    if args.command == "keys" and args.keys_command == "init":
        ca_chain = _chain(args.ca_chain)
        material = gather(args.data_dir, datetime.now(UTC), ca_chain=ca_chain, create=True)
        for line in describe(material):
            print(line)
        return 0
    if args.command == "dev-issuer":
        if args.dev_command == "init":
            print(devissuer.init(args.dir, args.issuer))
        else:
            print(devissuer.token(args.dir, args.email, datetime.now(UTC)))
        return 0
    if args.command == "trust" and args.trust_command == "export":
        ca_chain = _chain(args.ca_chain)
        options = TrustOptions(
            args.public_url, operator=args.operator, oidc_urls=args.oidc_url, ca_chain=ca_chain
        )
        try:
            exported = export(
                args.data_dir,
                options,
                args.out,
                datetime.now(UTC),
                identity=args.identity,
                issuer=args.issuer,
                create_keys=args.init,
            )
        except MissingKeysError as exc:
            raise SystemExit(f"sigstead: {exc} (or pass --init)") from None
        except NotPublishedError as exc:
            raise SystemExit(f"sigstead: not exported: {exc}") from None
        print(
            f"wrote {args.out}: trusted root, signing config, client trust config, TUF "
            f"repository (root v{exported.published.root}, targets v{exported.published.targets})"
            " and snippets"
        )
        return 0
    if args.command == "backup":
        return _backup(args)
    if args.command == "db" and args.db_command == "upgrade":
        asyncio.run(_db_upgrade(args.database_url))
        return 0
    return 2  # pragma: no cover -- argparse rejects unknown commands first


if __name__ == "__main__":
    sys.exit(main())
