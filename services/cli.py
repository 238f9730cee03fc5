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

from clients.cli import add_log_parser, run_log
from services.app import COMPONENTS, DEFAULT_MAX_BODY, Settings, create_app
from services.db import Database
from services.migrate import upgrade
from services.tsa import keys as tsa_keys

__all__ = ["main"]


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
        required=True,
        help="sqlite:///PATH or postgresql://USER@HOST/DB",
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
        "--database-url", help="default: SQLite in the data dir; or postgresql://USER@HOST/DB"
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
    add_log_parser(sub)
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
        )
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
        web.run_app(app, host=args.host, port=args.port, print=None, access_log=access_log)
        return 0
    if args.command == "log":
        return run_log(args)
    if args.command == "db" and args.db_command == "upgrade":
        asyncio.run(_db_upgrade(args.database_url))
        return 0
    return 2  # pragma: no cover -- argparse rejects unknown commands first


if __name__ == "__main__":
    sys.exit(main())
