"""The ``sigstead`` command.

Each command imports what it needs when it runs: ``sigstead --help`` (and every refusal of a
bad flag) must not pay for aiohttp, SQLAlchemy, cryptography and python-tuf.

Errors take one path: ``main`` prints an ``OperatorError`` (a bad flag, file, key, database or
data directory: see ``services.errors``) or a client's ``ClientError`` as one line and exits 1;
only ``-v`` adds the traceback. Anything else is a bug, and says so.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clients.bench import add_bench_parser
from clients.cli import add_log_parser
from clients.errors import ClientError
from services.errors import OperatorError
from services.settings import (
    CA_KEY_TYPES,
    COMPONENTS,
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_MAX_BODY,
    LOG_KEY_TYPES,
    PUBLISHABLE,
)

if TYPE_CHECKING:
    import socket

    from cryptography import x509

    from services.ca.pkcs11 import Pkcs11KeyConfig
    from services.datadir import Claim
    from services.settings import Settings
    from services.trust.publish import TrustOptions

__all__ = ["main"]

_logger = logging.getLogger("sigstead")

# The environment is the place for a URL with a password in it: the command line is visible to
# every local user.
DATABASE_URL_ENV = "SIGSTEAD_DATABASE_URL"
DEFAULT_DATA_DIR = Path("sigstead-data")
# Kept in step with services.ca.devissuer.DEFAULT_ISSUER (a test checks), which this module
# does not import: it would load PyJWT and cryptography for every command.
DEV_ISSUER = "https://dev-issuer.sigstead.invalid"

ENVIRONMENT = """\
environment:
  SIGSTEAD_DATABASE_URL     default of --database-url (keeps a password out of `ps`)
  PGPASSWORD, ~/.pgpass     the PostgreSQL password, if the URL has none
  SIGSTEAD_CA_KEY_PASSWORD  the password of --ca-key, if encrypted (or --ca-key-password-file)
  SIGSTEAD_PKCS11_PIN       the user PIN of the CA's PKCS#11 token (or --ca-pkcs11-pin-file)
  SIGSTEAD_URL              default of `sigstead log --url`
  SIGSTEAD_STATE_DIR        default of `sigstead log --state-dir` (pinned log keys)

Run with -v for debug logging and, on an error, its traceback."""


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, unless it has none or its help already says it; text laid
    out in lines of its own (the environment list) is kept as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, False, [], argparse.SUPPRESS):
            return text
        return super()._get_help_string(action) or text


class _Version(argparse.Action):
    """``--version``, reading the installed version only when asked."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_args: object, **_kw: object) -> None:
        from importlib.metadata import version

        print(version("sigstead"))
        parser.exit()


def _verbose(parser: argparse.ArgumentParser) -> None:
    # On every subcommand too: `sigstead up -v` works as well as `sigstead -v up`.
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,
        help="debug logging, and a traceback with any error",
    )


def _command(sub: Any, name: str, summary: str, description: str | None = None) -> Any:
    parser = sub.add_parser(
        name, help=summary, description=description or summary, formatter_class=_Help
    )
    _verbose(parser)
    return parser


# --- option groups: each command takes only the options it uses ------------------------------


def _data_dir(parser: argparse.ArgumentParser, what: str = "keys and the SQLite database") -> None:
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        metavar="DIR",
        help=f"the data directory: {what} (created 0700; its parent must exist)",
    )


def _listen(parser: argparse.ArgumentParser, *, max_body: bool = True) -> None:
    group = parser.add_argument_group("listening")
    group.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on; 0.0.0.0 (or ::) for every interface",
    )
    group.add_argument("--port", type=int, default=3000, help="TCP port to listen on")
    group.add_argument(
        "--public-url",
        metavar="URL",
        help="the URL clients use, http(s)://HOST[:PORT] with no path (default: "
        "http://HOST:PORT); its host names the log in every checkpoint",
    )
    if max_body:
        group.add_argument(
            "--max-body",
            type=int,
            default=DEFAULT_MAX_BODY,
            metavar="BYTES",
            help="largest Rekor entry accepted (other endpoints have fixed limits that fit "
            "their requests: docs/limits.md)",
        )
        group.add_argument(
            "--body-timeout",
            type=float,
            default=DEFAULT_BODY_TIMEOUT,
            metavar="SECONDS",
            help="time a client has to send a request body once its headers are in (408)",
        )
        group.add_argument(
            "--rekor-v2-refuse-dsse",
            action="store_true",
            help="refuse Rekor v2 dsse entries (sigstore-js 4.x attestations) as rekor-tiles "
            "v2.3 does; sigstore-python and cosign log attestations as hashedrekord",
        )
        _rekor_v2_key_type(group)
        group.add_argument(
            "--rekor-v2-freeze",
            action="store_true",
            help="freeze the Rekor v2 log: sign its final checkpoint ('Log frozen — <time>', as "
            "rekor-tiles) and refuse writes with 405 from then on, whatever later starts say; "
            "the way to retire it (docs/rekor-v2.md)",
        )
    group.add_argument(
        "--access-log",
        action="store_true",
        help="log every request (costs about a third of the TSA's throughput)",
    )


def _ca_key_type(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument(
        "--ca-key-type",
        choices=CA_KEY_TYPES,
        help="the key type of a CA generated in the data directory (default ecdsa-p384, as "
        "Fulcio's; ecdsa-p256 makes the CA's two signatures per certificate ~7x cheaper: "
        "docs/sizing.md); an existing CA keeps its type",
    )


def _rekor_v2_key_type(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument(
        "--rekor-v2-key-type",
        choices=LOG_KEY_TYPES,
        default=LOG_KEY_TYPES[0],
        help="the Rekor v2 checkpoint key type when the key is created (the public 2025 log "
        "uses ed25519); an existing keys/rekor-v2.pem keeps its type",
    )


def _rekor_v2_url(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument(
        "--rekor-v2-url",
        metavar="URL",
        help="the Rekor v2 log's own URL, http(s)://HOST[:PORT] (default: the public URL); its "
        "host is the log's origin and key name, so each v2 log, retired ones too, has its own "
        "host name reaching this server",
    )


def _witness_policy(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--witness-policy",
        type=Path,
        metavar="FILE",
        help="Sigsum-syntax policy ('witness NAME VKEY URL', 'group NAME k|all|any MEMBER...', "
        "'quorum NAME|none'): the logs ask these witnesses to cosign each new checkpoint and "
        "serve the newest quorum-cosigned one (docs/auditing.md); fail-open",
    )


def _sequencing(parser: argparse.ArgumentParser, *, every_core: bool = False) -> None:
    group = parser.add_argument_group(
        "sequencing",
        "Processes serving one log (workers here, replicas on one PostgreSQL) elect one "
        "sequencer per log; the others forward their verified entries to it (docs/sizing.md).",
    )
    # One process by default where replicas are the unit of scale (serve); every core for up.
    cores = len(os.sched_getaffinity(0)) if every_core else 1
    group.add_argument(
        "--workers",
        type=int,
        default=int(os.environ.get("SIGSTEAD_WORKERS", str(cores))),
        help="processes sharing the port (SO_REUSEPORT); each parses, verifies and answers "
        f"requests, one sequences (default: $SIGSTEAD_WORKERS, else {cores}"
        + (", the cores this process may use)" if every_core else ")"),
    )
    group.add_argument(
        "--sequencer-listen",
        default=os.environ.get("SIGSTEAD_SEQUENCER_LISTEN", "127.0.0.1:0"),
        metavar="HOST:PORT",
        help="where this process takes forwarded entries when elected (port 0: any free one) "
        "(default: $SIGSTEAD_SEQUENCER_LISTEN, else 127.0.0.1:0)",
    )
    group.add_argument(
        "--sequencer-process",
        action=argparse.BooleanOptionalAction,
        default=os.environ.get("SIGSTEAD_SEQUENCER_PROCESS", "1") not in ("0", "false", "no"),
        help="with --workers 2 or more, sequence in one more process that answers no requests, "
        "so that no worker both sequences and serves (default: $SIGSTEAD_SEQUENCER_PROCESS, "
        "else on; docs/sizing.md)",
    )
    group.add_argument(
        "--sequencer-url",
        default=os.environ.get("SIGSTEAD_SEQUENCER_URL"),
        metavar="URL",
        help="the URL the other processes reach that at, for replicas on other hosts "
        "(default: $SIGSTEAD_SEQUENCER_URL, else http:// the address bound)",
    )


def _database(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url",
        default=os.environ.get(DATABASE_URL_ENV),
        metavar="URL",
        help="postgresql://USER@HOST[:PORT]/DB (postgres:// too) or sqlite:///PATH (default: "
        f"${DATABASE_URL_ENV}, else SQLite in the data directory); the password belongs in "
        "PGPASSWORD or ~/.pgpass, out of the process list",
    )


def _ca_chain(parser: Any, help_text: str) -> None:
    parser.add_argument("--ca-chain", type=Path, metavar="FILE", help=help_text)


def _ca(parser: argparse.ArgumentParser, *, required: bool) -> None:
    group = parser.add_argument_group("certificate authority")
    # Not argparse-required: the check in services.app says why in one line, not a usage dump.
    group.add_argument(
        "--oidc-config",
        type=Path,
        metavar="FILE",
        help="Fulcio-format OIDC issuer config (JSON or YAML): the identity providers whose "
        "tokens the CA certifies"
        + ("; required" if required else "; enables the CA and its CT log (without it, no CA)"),
    )
    # The CA key defaults to a root + intermediate generated in the data dir. Secrets never go
    # on the command line (every local user can read it in ps): files or environment only.
    group.add_argument(
        "--ca-key",
        type=Path,
        metavar="FILE",
        help="the CA's own PEM private key (mode 0600), with --ca-chain; its password, if any, "
        "from $SIGSTEAD_CA_KEY_PASSWORD or --ca-key-password-file (default: a CA generated "
        "in the data directory)",
    )
    group.add_argument(
        "--ca-key-password-file", type=Path, metavar="FILE", help="file holding --ca-key's password"
    )
    _ca_key_type(group)
    _ca_chain(
        group, "PEM chain for --ca-key or the PKCS#11 key: the signing certificate first, root last"
    )
    group.add_argument(
        "--ca-pkcs11-module",
        type=Path,
        metavar="FILE",
        help="PKCS#11 module (.so) whose token holds the CA key; with --ca-pkcs11-token, "
        "--ca-pkcs11-key-label or -id, and --ca-chain; PIN from $SIGSTEAD_PKCS11_PIN or "
        "--ca-pkcs11-pin-file",
    )
    group.add_argument("--ca-pkcs11-token", metavar="LABEL", help="the token's label")
    group.add_argument("--ca-pkcs11-key-label", metavar="LABEL", help="the private key's label")
    group.add_argument(
        "--ca-pkcs11-key-id", metavar="HEX", type=bytes.fromhex, help="the private key's CKA_ID"
    )
    group.add_argument(
        "--ca-pkcs11-pin-file", type=Path, metavar="FILE", help="file holding the token's user PIN"
    )


def _publication(parser: argparse.ArgumentParser, *, services: bool, chain: bool) -> None:
    group = parser.add_argument_group("published trust documents")
    group.add_argument(
        "--operator",
        help="operator name in the trust documents (default: the public URL's host)",
    )
    group.add_argument(
        "--oidc-url",
        action="append",
        default=[],
        metavar="URL",
        help="an identity provider for interactive sign-in, listed in the signing config "
        "(repeatable; needs a CA)",
    )
    group.add_argument(
        "--rekor-version",
        type=int,
        choices=(1, 2),
        default=1,
        help="the Rekor API clients sign with: 2 lists the Rekor v2 log first in the signing "
        "config (clients without v2 fall back to v1; v2 bundles need the TSA); both logs are "
        "always served and in the trusted root",
    )
    _rekor_v2_url(group)
    if chain:
        _ca_chain(
            group,
            "the chain of a CA whose key is not in the data directory (--ca-key or PKCS#11 "
            "on the CA's server) (default: DIR/ca)",
        )
    if services:
        group.add_argument(
            "--services",
            metavar="LIST",
            help=f"the services clients are sent to, from {','.join(PUBLISHABLE)} (the log "
            "always) (default: those already published, all of them on a first publication)",
        )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sigstead",
        description="A private Sigstore: a Rekor-compatible transparency log, a "
        "Fulcio-compatible CA, an RFC 3161 timestamp authority, and TUF trust distribution.",
        epilog=ENVIRONMENT,
        formatter_class=_Help,
    )
    parser.add_argument("--version", action=_Version, help="print the version and exit")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="debug logging, and a traceback with any error"
    )
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=os.environ.get("SIGSTEAD_LOG_FORMAT", "text"),
        help="text lines, or one JSON object a line for a log collector (default: "
        "$SIGSTEAD_LOG_FORMAT, else text)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = _command(
        sub,
        "up",
        "run every service on one port",
        "Run every service on one port: the Rekor log, the timestamp authority, the TUF "
        "repository, and with --oidc-config the CA and its CT log. Stop with Ctrl-C or SIGTERM: "
        "what is queued is committed first.",
    )
    _data_dir(up)
    _listen(up)
    _database(up)
    _sequencing(up, every_core=True)
    _witness_policy(up)
    _ca(up, required=False)
    _publication(up, services=False, chain=False)
    up.set_defaults(run=_serve)

    serve = _command(
        sub,
        "serve",
        "run one service alone (the production layout)",
        "Run one service alone, as the production layout does (compose.yaml): the processes "
        "share one data directory and database.",
    )
    serve.set_defaults(run=_serve)
    serve_sub = serve.add_subparsers(dest="component", required=True, metavar="SERVICE")
    log = _command(serve_sub, "log", "the Rekor log (replicas may share the database)")
    _data_dir(log)
    _listen(log)
    _database(log)
    _sequencing(log)
    _witness_policy(log)
    _rekor_v2_url(log)
    ca = _command(serve_sub, "ca", "the CA and its CT log")
    _data_dir(ca)
    _listen(ca)
    _database(ca)
    _sequencing(ca)
    _ca(ca, required=True)
    tsa = _command(serve_sub, "tsa", "the RFC 3161 timestamp authority")
    _data_dir(tsa, "the TSA's keys")
    _listen(tsa)
    tsa.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes sharing the port (SO_REUSEPORT); the TSA is stateless",
    )
    trust = _command(
        serve_sub,
        "trust",
        "the TUF repository, re-signed before it expires",
        "Serve the TUF "
        "repository at /tuf/ and publish the trust documents: the one publisher of the data "
        "directory.",
    )
    _data_dir(trust, "the keys the documents describe, and the TUF repository")
    _listen(trust, max_body=False)
    _publication(trust, services=True, chain=True)
    assert set(COMPONENTS) == set(serve_sub.choices)

    trust_cmd = _command(sub, "trust", "trust distribution")
    trust_sub = trust_cmd.add_subparsers(dest="trust_command", required=True, metavar="COMMAND")
    exp = _command(
        trust_sub,
        "export",
        "write what clients need to trust and use sigstead",
        "Write trusted_root.json, signing_config.v0.2.json, the client trust config, the TUF "
        "repository and consumer snippets: what the running server publishes, checked against "
        "these flags, which must be the server's. Reads the data directory; a running server "
        "is not disturbed.",
    )
    _data_dir(exp, "the server's")
    exp.add_argument(
        "--public-url",
        required=True,
        metavar="URL",
        help="the URL clients use: the server's --public-url (or http://HOST:PORT)",
    )
    exp.add_argument("--out", type=Path, required=True, metavar="DIR", help="directory to write")
    _publication(exp, services=True, chain=True)
    exp.add_argument(
        "--init",
        action="store_true",
        help="create the keys if the data directory has none yet (to export before the first "
        "start); without it a missing key is an error",
    )
    exp.add_argument("--identity", help="signer identity (SAN) the policy snippets require")
    exp.add_argument("--issuer", help="OIDC issuer the policy snippets require")
    exp.add_argument(
        "--images",
        metavar="GLOB",
        help="image pattern the policy snippets apply to (e.g. registry.internal/team/*)",
    )
    exp.add_argument(
        "--builder-id",
        metavar="URI",
        help="SLSA builder id the policy snippets require in provenance (runDetails.builder.id); "
        "also Tekton Chains' builder.id",
    )
    exp.set_defaults(run=_trust_export)
    pub = _command(
        trust_sub,
        "publish",
        "publish the trust documents under new settings (moves clients)",
        "Publish the trust documents with these settings, for example under a new public URL: "
        "clients following the TUF repository go where it says. A server refuses to start "
        "with settings other than the published ones, so this is the one way to change them. "
        "Stop the servers on the data directory first.",
    )
    _data_dir(pub, "the server's")
    pub.add_argument(
        "--public-url", required=True, metavar="URL", help="the URL clients are to use from now on"
    )
    _publication(pub, services=True, chain=True)
    pub.set_defaults(run=_trust_publish)

    dev = _command(
        sub,
        "dev-issuer",
        "a local OIDC issuer for trying sigstead out (never in production)",
    )
    dev_sub = dev.add_subparsers(dest="dev_command", required=True, metavar="COMMAND")
    dev_init = _command(dev_sub, "init", "create its key and print the CA config path")
    dev_init.add_argument("--dir", type=Path, default=Path("dev-issuer"), help="where it lives")
    dev_init.add_argument(
        "--issuer", default=DEV_ISSUER, help="its issuer URL (never resolved: a JWKS file)"
    )
    dev_init.set_defaults(run=_dev_issuer_init)
    dev_token = _command(dev_sub, "token", "print a 10-minute ID token")
    dev_token.add_argument("--dir", type=Path, default=Path("dev-issuer"), help="its directory")
    dev_token.add_argument("--email", required=True, help="the identity to vouch for")
    dev_token.add_argument(
        "--out",
        type=Path,
        metavar="FILE",
        help="write the token to FILE (mode 0600, no trailing newline: the form cosign's "
        "--identity-token takes, since a JWT is longer than a file name and cosign reads the "
        "flag as a path first) instead of printing it",
    )
    dev_token.set_defaults(run=_dev_issuer_token)

    keys = _command(sub, "keys", "key material")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="COMMAND")
    keys_init = _command(
        keys_sub,
        "init",
        "create every missing key (log, CT log, CA, TSA) and print them",
        "Create every missing key in the data directory (log, CT log, CA, TSA), once, before "
        "services that share it start; print what it holds. Never replaces a key, so it is "
        "safe beside a running server.",
    )
    _data_dir(keys_init, "where the keys go")
    _ca_chain(
        keys_init, "the CA chain the server is given (key file or PKCS#11 CA): no CA is generated"
    )
    _rekor_v2_key_type(keys_init)
    _ca_key_type(keys_init)
    keys_init.set_defaults(run=_keys_init)
    retire = _command(
        keys_sub,
        "retire-v2",
        "retire the frozen Rekor v2 log and make a new log's key",
        "Retire the Rekor v2 log, once frozen (a start with --rekor-v2-freeze): its key pair "
        "moves to DIR/keys/retired/ with a record of its URL, and a new key, a new log, is "
        "made. The retired log stays in the trusted root (valid until now) and is served "
        "read-only at its URL's host; give the new log another host with --rekor-v2-url, "
        "publish (sigstead trust publish), then start (docs/rekor-v2.md).",
    )
    _data_dir(retire, "the log's keys and, by default, its database")
    _database(retire)
    retire.add_argument(
        "--rekor-v2-url",
        required=True,
        metavar="URL",
        help="the URL the retiring log has had (its host is its origin), as the trusted root "
        "lists it",
    )
    _rekor_v2_key_type(retire)
    retire.set_defaults(run=_keys_retire_v2)

    bak = _command(
        sub,
        "backup",
        "copy the keys, the TUF repository and a SQLite database, online",
        "Copy the keys, the TUF repository and a SQLite database, online, into a new directory "
        "that is itself a data directory (PostgreSQL: pg_dump, docs/deploy.md).",
    )
    _data_dir(bak, "the server's")
    bak.add_argument("--out", type=Path, required=True, help="the backup: a new directory")
    bak.add_argument(
        "--database-url",
        default=os.environ.get(DATABASE_URL_ENV),
        metavar="URL",
        help=f"the server's (default: ${DATABASE_URL_ENV}, else SQLite in the data directory); "
        "a PostgreSQL database is left to pg_dump",
    )
    bak.set_defaults(run=_backup)

    fsck = _command(
        sub,
        "fsck",
        "replay every log and prove it is what its checkpoints say",
        "Replay every log in the database (Rekor v1, Rekor v2, the CT log): leaf hashes from the "
        "stored entries, every stored tile rebuilt, every checkpoint's signature and root, the "
        "tree head, the search index against the entries; with --deep each Rekor v1 entry's "
        "SET and each hashedrekord entry's signature and canonical form; or, with --url, an "
        "auditor's replay of the public read APIs. Reads one snapshot, so it can run beside a "
        "live server. Exits 0 only "
        "when everything checks, else names the first divergence and exits 1.",
    )
    _data_dir(fsck, "the server's (its keys/*.pub are the log keys)")
    _database(fsck)
    fsck.add_argument(
        "--deep",
        action="store_true",
        help="also verify each Rekor v1 SET, and re-admit each hashedrekord entry (signature, "
        "canonical form)",
    )
    auditor = fsck.add_argument_group("an auditor's replay over HTTP (instead of the database)")
    auditor.add_argument(
        "--url",
        metavar="URL",
        help="replay the logs of this deployment from its public read APIs only",
    )
    auditor.add_argument(
        "--trusted-root",
        type=Path,
        metavar="FILE",
        help="the trusted_root.json whose log keys and URLs to check them against (with --url)",
    )
    fsck.add_argument(
        "--skip-index",
        action="store_true",
        help="do not replay the search index (it parses every entry: the slow part)",
    )
    fsck.add_argument("--json", action="store_true", help="one JSON object a line")
    fsck.set_defaults(run=_fsck)

    monitor = _command(
        sub,
        "monitor",
        "watch a deployment's Rekor logs for identities and misbehaviour",
        "Follow every Rekor log of a trusted root over its public APIs: verify each new "
        "checkpoint, read every new entry and prove the new tree extends the last verified one, "
        "and report the entries that match a watch list. JSON lines on stdout (match, alarm, "
        "error), optionally POSTed to a webhook. With --once: exit 0 (nothing), 1 (matches), "
        "2 (an alarm: the log misbehaved) or 3 (a log could not be checked).",
    )
    monitor.add_argument("--url", required=True, help="the deployment's base URL")
    monitor.add_argument(
        "--trusted-root", type=Path, required=True, metavar="FILE", help="its trusted_root.json"
    )
    monitor.add_argument(
        "--config", type=Path, required=True, metavar="FILE", help="the watch list (YAML/JSON)"
    )
    monitor.add_argument(
        "--state",
        type=Path,
        required=True,
        metavar="FILE",
        help="where the last verified checkpoints are kept (restarts resume from it)",
    )
    monitor.add_argument("--once", action="store_true", help="one pass, then exit (cron, CI)")
    monitor.add_argument(
        "--from-now",
        action="store_true",
        help="start a log the state file does not know at its current head (checked against "
        "the signed root) instead of reading its history from entry 0",
    )
    monitor.add_argument(
        "--interval", type=float, default=60.0, metavar="SECONDS", help="between passes"
    )
    monitor.add_argument("--webhook", metavar="URL", help="POST every event here as JSON")
    monitor.add_argument(
        "--witness",
        action="append",
        default=[],
        metavar="VKEY",
        help="a witness whose cosignature the log's witnessed checkpoint must carry "
        "(its vkey, as `sigstead witness init` prints it; repeatable)",
    )
    monitor.add_argument(
        "--witness-quorum",
        type=int,
        metavar="N",
        help="how many of the --witness keys must have cosigned (default: all)",
    )
    monitor.add_argument(
        "--peer",
        action="append",
        default=[],
        metavar="URL",
        help="the same deployment seen from elsewhere: each log's head there must be "
        "consistent with this one (split-view detection; repeatable)",
    )
    monitor.set_defaults(run=_monitor)

    witness = _command(
        sub,
        "witness",
        "an independent C2SP tlog-witness (docs/auditing.md)",
        "A C2SP tlog-witness: cosigns the checkpoints of the logs it trusts once each is proved "
        "consistent with the last one it cosigned. Runs on its own state directory and port, "
        "apart from the log it watches (docs/auditing.md).",
    )
    witness_sub = witness.add_subparsers(dest="witness_command", required=True, metavar="COMMAND")
    w_init = _command(
        witness_sub,
        "init",
        "create the witness's key and print its vkey",
        "Create the witness's Ed25519 key (mode 0600) and name in the state directory, once, "
        "and print the witness's vkey, which log clients configure to trust its cosignatures. "
        "Run again, it prints the same vkey.",
    )
    w_init.add_argument(
        "--state-dir", type=Path, required=True, metavar="DIR", help="the witness's directory"
    )
    w_init.add_argument(
        "--name",
        required=True,
        help="the witness's key name, a schema-less URL such as witness.example/w1",
    )
    w_init.set_defaults(run=_witness_init)
    w_serve = _command(
        witness_sub,
        "serve",
        "serve POST /add-checkpoint",
        "Serve POST /add-checkpoint (and GET /<origin hash>/checkpoint for monitors) for the "
        "logs in --logs. Stop with Ctrl-C or SIGTERM.",
    )
    w_serve.add_argument(
        "--state-dir",
        type=Path,
        required=True,
        metavar="DIR",
        help="the directory `witness init` made",
    )
    w_serve.add_argument(
        "--logs",
        type=Path,
        required=True,
        metavar="FILE",
        help="the logs to cosign: one '<vkey> [<origin>]' a line (Ed25519 or ECDSA vkeys; the "
        "origin defaults to the key name); re-read at each start",
    )
    w_serve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on; 0.0.0.0 for every interface"
    )
    w_serve.add_argument("--port", type=int, default=3100, help="TCP port to listen on")
    w_serve.add_argument("--access-log", action="store_true", help="log every request")
    w_serve.set_defaults(run=_witness_serve)
    w_vkey = _command(
        witness_sub,
        "log-vkey",
        "print the logs-file line of an ECDSA or Ed25519 log key (such as sigstead's)",
        "Print the line of --logs that trusts the log whose PEM public key is --public-key "
        "(sigstead's are DIR/keys/rekor.pub and rekor-v2.pub), signing under --name (the "
        "log's host) for "
        "--origin (the first line of its checkpoints).",
    )
    w_vkey.add_argument(
        "--public-key", type=Path, required=True, metavar="FILE", help="the log's PEM public key"
    )
    w_vkey.add_argument("--name", required=True, help="the key name in the log's signatures")
    w_vkey.add_argument("--origin", help="the log's origin (default: the key name)")
    w_vkey.set_defaults(run=_witness_log_vkey)

    db = _command(sub, "db", "database maintenance")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="COMMAND")
    upgrade = _command(db_sub, "upgrade", "migrate a database to the newest schema")
    upgrade.add_argument(
        "--database-url",
        default=os.environ.get(DATABASE_URL_ENV),
        required=DATABASE_URL_ENV not in os.environ,
        metavar="URL",
        help=f"sqlite:///PATH or postgresql://USER@HOST/DB (default: ${DATABASE_URL_ENV})",
    )
    upgrade.set_defaults(run=_db_upgrade)

    add_log_parser(sub, _Help, _verbose)
    add_bench_parser(sub)
    bench = sub.choices["bench"]
    _verbose(bench)
    bench.set_defaults(run=_bench)
    return parser


def _bench(args: argparse.Namespace) -> int:
    from clients.bench import run_bench

    return run_bench(args)


# --- serving --------------------------------------------------------------------------------


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _settings(args: argparse.Namespace) -> Settings:
    from services.settings import Settings

    if not 0 < args.port < 65536:
        raise OperatorError(f"--port {args.port}: not a TCP port (1 to 65535)")
    public_url = args.public_url or f"http://{_url_host(args.host)}:{args.port}"
    services = getattr(args, "services", None)
    if services is not None:
        from services.trust.publish import parse_services

        services = parse_services(services)
    return Settings(
        data_dir=args.data_dir,
        public_url=public_url,
        database_url=getattr(args, "database_url", None),
        max_body=getattr(args, "max_body", DEFAULT_MAX_BODY),
        body_timeout=getattr(args, "body_timeout", DEFAULT_BODY_TIMEOUT),
        oidc_config=getattr(args, "oidc_config", None),
        ca_key=getattr(args, "ca_key", None),
        ca_key_password_file=getattr(args, "ca_key_password_file", None),
        ca_chain=getattr(args, "ca_chain", None),
        ca_pkcs11=_ca_pkcs11(args),
        ca_key_type=getattr(args, "ca_key_type", None),
        operator=getattr(args, "operator", None),
        oidc_urls=tuple(getattr(args, "oidc_url", ())),
        published_services=services,
        rekor_version=getattr(args, "rekor_version", 1),
        rekor_v2_dsse=not getattr(args, "rekor_v2_refuse_dsse", False),
        rekor_v2_key_type=getattr(args, "rekor_v2_key_type", "ecdsa-p256"),
        rekor_v2_url=getattr(args, "rekor_v2_url", None),
        rekor_v2_freeze=getattr(args, "rekor_v2_freeze", False),
        witness_policy=getattr(args, "witness_policy", None),
        workers=getattr(args, "workers", 1),
        sequencer_listen=_host_port(getattr(args, "sequencer_listen", "127.0.0.1:0")),
        sequencer_url=getattr(args, "sequencer_url", None),
    )


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise OperatorError(f"--sequencer-listen {text}: want HOST:PORT (port 0: any free one)")
    return host.strip("[]") or "0.0.0.0", int(port)  # noqa: S104 -- an operator's choice


def _ca_pkcs11(args: argparse.Namespace) -> Pkcs11KeyConfig | None:
    if getattr(args, "ca_pkcs11_module", None) is None:
        named = [getattr(args, f"ca_pkcs11_{n}", None) for n in ("token", "key_label", "key_id")]
        if any(named) or getattr(args, "ca_pkcs11_pin_file", None):
            raise OperatorError("--ca-pkcs11-* flags need --ca-pkcs11-module")
        return None
    from services.ca.pkcs11 import Pkcs11KeyConfig

    return Pkcs11KeyConfig(
        module=args.ca_pkcs11_module,
        token_label=args.ca_pkcs11_token or "",
        key_label=args.ca_pkcs11_key_label,
        key_id=args.ca_pkcs11_key_id,
        pin_file=args.ca_pkcs11_pin_file,
    )


def _listen_sockets(host: str, port: int, *, reuse_port: bool = False) -> list[socket.socket]:
    """Bound, listening sockets for ``host:port``; an ``OperatorError`` if the port is taken.

    Bound before anything else happens, so that a port in use stops a start before it has
    created a key, a database or a data directory, and so that nobody can take the port while
    the services start. With ``reuse_port`` (SO_REUSEPORT) a worker pool binds one set per
    worker, and the kernel spreads connections over them.
    """
    import errno
    import socket

    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise OperatorError(f"--host {host}: {exc.strerror}") from None
    sockets: list[socket.socket] = []
    seen = set()
    try:
        for family, kind, proto, _name, address in infos:
            if address in seen:
                continue
            seen.add(address)
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                where = f"{_url_host(str(address[0]))}:{port}"
                advice = {
                    errno.EADDRINUSE: "another process listens there; stop it or choose --port",
                    errno.EACCES: "ports below 1024 need privileges; choose --port",
                    errno.EADDRNOTAVAIL: "not an address of this machine; check --host",
                }.get(exc.errno or 0, "check --host and --port")
                raise OperatorError(
                    f"cannot listen on {where}: {exc.strerror} ({advice})"
                ) from None
            sock.listen(128)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _check_database(url: str) -> None:
    import asyncio

    from services.db import Database

    async def check() -> None:
        db = Database(url)
        try:
            await db.check()
        finally:
            await db.dispose()

    asyncio.run(check())


_SERVED = {
    "log": "Rekor log",
    "ca": "CA with its CT log",
    "tsa": "timestamp authority",
    "trust": "TUF repository",
}


def _announce(
    command: str, components: Sequence[str], settings: Settings, listen: str
) -> tuple[str, str]:
    """The start and stop lines: what is served where, so the operator can check it at once."""
    from services.db import display_url

    parts = [
        f"{command}: serving {', '.join(_SERVED[c] for c in components)} at {settings.public_url} "
        f"(listening on {listen})"
    ]
    if {"log", "ca"} & set(components):
        parts.append(f"database {display_url(settings.resolved_database_url())}")
    parts.append(f"data directory {settings.data_dir.absolute()}")
    if command == "up" and "ca" not in components:
        parts.append("no CA (--oidc-config enables it)")
    return "; ".join(parts), f"{command} on {settings.public_url}: stopped"


def _serve(args: argparse.Namespace) -> int:
    """``sigstead up`` and ``sigstead serve NAME``."""
    workers = getattr(args, "workers", 1)
    if workers < 1:
        raise OperatorError("--workers must be at least 1")
    if workers > 1:
        fixed = getattr(args, "sequencer_url", None) or not str(
            getattr(args, "sequencer_listen", ":0")
        ).endswith(":0")
        if fixed:
            # Each worker takes forwarded entries at its own address when elected.
            raise OperatorError(
                "--sequencer-listen with a fixed port, or --sequencer-url, names one process: "
                "give them with --workers 1 (replicas), or leave them out for a worker pool"
            )
        _share_metrics()
    from services import app as app_module
    from services import datadir

    settings = _settings(args)
    if args.command == "up":
        command, components = "up", app_module.configured(settings)
    else:
        command, components = f"serve {args.component}", (args.component,)
    # Everything that writes nothing comes first; then the port, which is held from here on;
    # then the database; only then is anything created (the data directory and its claim).
    app_module.check(settings, components)
    datadir.check(settings.data_dir)
    pools = [_listen_sockets(args.host, args.port, reuse_port=workers > 1)]
    sockets = list(pools[0])
    try:
        # Port 0 chose one: every worker's sockets take the same.
        port = pools[0][0].getsockname()[1]
        for _ in range(workers - 1):
            pools.append(_listen_sockets(args.host, port, reuse_port=True))
            sockets += pools[-1]
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    listen = ", ".join(
        f"{_url_host(str(s.getsockname()[0]))}:{s.getsockname()[1]}" for s in pools[0]
    )
    if settings.database_url is not None and {"log", "ca"} & set(components):
        _check_database(settings.database_url)
    claim = datadir.claim(
        settings.data_dir,
        command=command,
        url=settings.public_url,
        exclusive=args.command == "up",
        publisher="trust" in components,
    )
    try:
        trust: TrustOptions | None = None
        if "trust" in components:
            trust = app_module.check_trust(settings, components)
        started, stopped = _announce(command, components, settings, listen)
        if workers > 1:
            if getattr(args, "sequencer_process", False):
                # Slot 0 listens on no public socket: it starts first, so it is elected
                # sequencer of every log, and the workers only parse, verify and answer.
                pools.insert(0, [])
            return _serve_workers(
                _Worker(settings, components, trust, pools[0], args.access_log),
                pools,
                claim,
                started,
                stopped,
            )

        def say(line: str) -> Callable[[object], Awaitable[None]]:
            async def log(_app: object) -> None:
                _logger.info("%s", line)

            return log

        _Worker(settings, components, trust, sockets, args.access_log).run(
            say(started), say(stopped)
        )
        return 0
    finally:
        for sock in sockets:
            sock.close()
        claim.release()


def _share_metrics() -> None:
    """Make the pool's workers keep their counters in one directory (services/metrics.py).

    Before anything imports prometheus-client: it picks its value store once, at import.
    """
    import atexit
    import shutil
    import tempfile

    if "prometheus_client" in sys.modules:  # pragma: no cover -- an import-order bug
        raise RuntimeError("prometheus_client was imported before the worker pool was set up")
    shared = tempfile.mkdtemp(prefix="sigstead-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = shared
    pid = os.getpid()

    # Only the pool's parent removes it (the workers are forked with this handler).
    def remove() -> None:
        if os.getpid() == pid:
            shutil.rmtree(shared, ignore_errors=True)

    atexit.register(remove)


@dataclass(frozen=True)
class _Worker:
    """One serving process: its settings, services and listening sockets."""

    settings: Settings
    components: tuple[str, ...]
    trust: TrustOptions | None
    sockets: list[socket.socket]
    access_log: bool

    def run(
        self,
        on_started: Callable[[object], Awaitable[None]],
        on_stopped: Callable[[object], Awaitable[None]],
    ) -> None:
        from aiohttp import web

        from services.app import create_app

        app = create_app(self.settings, components=self.components, trust=self.trust)
        # After the cleanup contexts: ready when every service has started, stopped once the
        # sequencer has committed what was queued and the database is closed.
        app.on_startup.append(on_started)
        app.on_startup.append(_freeze_heap)
        app.on_cleanup.append(on_stopped)
        # Per-request access lines cost about a third of TSA throughput (bench/bench_tsa.py);
        # they are opt-in.
        access_log = logging.getLogger("aiohttp.access") if self.access_log else None
        # run_app stops accepting on SIGTERM/SIGINT, lets in-flight requests finish, then runs
        # the cleanup contexts: the sequencer commits what is queued and the database closes.
        # auto_decompress off: aiohttp would inflate a gzip body in its parser, before any
        # limit applies, and log a traceback for a corrupt one; body_guard refuses them (415).
        web.run_app(
            app, sock=self.sockets, print=None, access_log=access_log, auto_decompress=False
        )


_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def _die_with(parent: int) -> None:
    """Be killed when the pool's parent dies, however it dies (Linux ``PR_SET_PDEATHSIG``):
    a pool outliving a ``kill -9`` of its parent would hold the port and answer as a server
    nobody runs."""
    import ctypes

    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:  # it died before the call
        os._exit(1)


async def _freeze_heap(_app: object) -> None:
    """Once every service has started: what exists now (modules, the app, keys, caches) lives
    as long as the process, so the cyclic collector need not walk it again. Its full
    collections otherwise rescan all of it, and each pause lands on requests in flight:
    measured with `sigstead bench write -c 256` on two workers, alternating runs without and
    with: 2,846-3,092/s, p99 209-248 ms against 3,017-3,384/s, p99 176-204 ms (four each), and
    3,129-3,544/s, p99 189-204 ms against 3,441-3,647/s, p99 161-180 ms (three each). A larger
    first-generation threshold on top of it changed nothing measurable."""
    gc.freeze()


def _pool_worker(worker: _Worker, ready: Any, claim: Any, parent: int, verbose: bool) -> None:
    # Forked with SIGTERM and SIGINT blocked and the parent's handlers: restore the defaults
    # (aiohttp installs its own once serving), then take a stop that arrived meanwhile.
    for signum in _STOP_SIGNALS:
        signal.signal(signum, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
    _die_with(parent)
    # The claim is the parent's: it ends when the parent does, not when its last worker does.
    claim.detach()

    async def set_ready(_app: object) -> None:
        ready.set()

    async def nothing(_app: object) -> None:
        return None

    try:
        worker.run(set_ready, nothing)
    except Exception as exc:
        if verbose:
            raise
        # As main() reports it: one line, no traceback.
        print(f"sigstead: {_describe(exc)}", file=sys.stderr)
        sys.exit(1)


_RESPAWNS_PER_MINUTE = 5
"""More crashes of one worker in a minute than this stop the pool: a crash loop is a bug an
operator must see, not something to retry for ever."""


@dataclass
class _Slot:
    """One worker's place in the pool: its sockets, and its current process."""

    index: int
    process: Any = None
    ready: Any = None
    crashes: list[float] = field(default_factory=list)


def _serve_workers(
    first: _Worker,
    pools: list[list[socket.socket]],
    claim: Claim,
    started: str,
    stopped: str,
) -> int:
    """Run one process per socket set in ``pools`` on one port; SIGTERM/SIGINT stop them all.

    Worker 0 starts alone and the others once it is ready: it makes what must be made once on
    a new data directory (keys, the schema, the genesis entries, the trust documents) and is
    elected sequencer of every log; the others forward to it (services/log/cluster.py). When
    its socket set is empty (``--sequencer-process``) it answers no requests and only
    sequences: a worker that also serves its share of the port spends a third to a half of its
    time sequencing everyone's entries, and the pool runs at that one busy worker's pace.

    If the sequencer process dies, a serving worker is elected in its place and keeps the
    role; the sequencer process started again stands by (no requests, no lock) until then.

    A worker that dies after it was serving (``kill -9``, a crash) is started again on its
    sockets, which this process keeps open so that connections the kernel hands them wait
    for the new worker instead of being refused; another worker is elected sequencer in its
    place meanwhile. A worker that fails to start stops the pool: that is an operator's error.
    """
    import dataclasses
    import multiprocessing
    import time
    from multiprocessing.connection import wait

    # fork: the listening sockets are inherited, not pickled.
    context = multiprocessing.get_context("fork")
    slots = [_Slot(index) for index in range(len(pools))]
    stopping = False
    failed = 0

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for slot in slots:
            proc = slot.process
            if proc is not None and proc.pid is not None and proc.exitcode is None:
                os.kill(proc.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    def spawn(slot: _Slot) -> None:
        worker = dataclasses.replace(
            first,
            settings=dataclasses.replace(first.settings, worker=slot.index),
            sockets=pools[slot.index],
        )
        slot.ready = context.Event()
        proc = context.Process(
            target=_pool_worker,
            args=(worker, slot.ready, claim, os.getpid(), _logger.isEnabledFor(logging.DEBUG)),
            daemon=True,
        )
        # A stop arriving during the fork waits until the worker is in its slot (and is then
        # sent on to it); the worker unblocks its own copy once its handlers are reset.
        signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            proc.start()
            slot.process = proc
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)

    def wait_ready(group: list[_Slot]) -> bool:
        for slot in group:
            while not slot.ready.wait(0.2):
                if stopping or any(s.process.exitcode is not None for s in group):
                    return False
        return True

    spawn(slots[0])
    if wait_ready(slots[:1]):
        # Serving from here on: worker 0 answers while the others start.
        if pools[0]:
            _logger.info("%s (%d worker processes)", started, len(pools))
        else:
            _logger.info("%s (%d workers and a sequencer process)", started, len(pools) - 1)
        for slot in slots[1:]:
            spawn(slot)
        wait_ready(slots[1:])
    slots = [s for s in slots if s.process is not None]  # those a failed start left unborn
    while alive := [s.process for s in slots if s.process.exitcode is None]:
        # One list for the test and the wait: a worker that exits in between must not leave
        # an empty wait, which never returns.
        wait([proc.sentinel for proc in alive], timeout=1.0)
        if stopping:
            continue
        for slot in slots:
            code = slot.process.exitcode
            if code is None:
                continue
            now = time.monotonic()
            slot.crashes = [t for t in slot.crashes if now - t < 60] + [now]
            if not slot.ready.is_set() or len(slot.crashes) > _RESPAWNS_PER_MINUTE:
                _logger.error(
                    "worker %d exited (%s)%s; stopping the others",
                    slot.index,
                    code,
                    "" if slot.ready.is_set() else " before it was serving",
                )
                failed = failed or abs(code) or 1
                stop(signal.SIGTERM, None)
                break
            _logger.error("worker %d exited (%s); starting it again", slot.index, code)
            spawn(slot)
    for sockets in pools:
        for sock in sockets:
            sock.close()
    _logger.info("%s", stopped)
    if failed:
        return failed
    # A worker the stop reached before it was serving ends by the signal itself: nothing was
    # in flight there, so that is a clean stop too.
    stop_deaths = {-signal.SIGTERM, -signal.SIGINT}
    return max(
        (0 if s.process.exitcode in stop_deaths else abs(s.process.exitcode or 0) for s in slots),
        default=0,
    )


# --- the other commands -----------------------------------------------------------------------


def _chain(path: Path | None) -> tuple[x509.Certificate, ...] | None:
    """The PEM chain an operator names with --ca-chain, if any."""
    if path is None:
        return None
    from services.ca.keys import load_chain

    return load_chain(path)


def _keys_init(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from services import datadir
    from services.keys import load_or_create_log_key
    from services.trust.material import REKOR_V2_KEY_FILE, describe, gather

    # No claim: it only adds keys that are missing, each linked into place once complete, and
    # never replaces one, so it may run beside the servers that use them (compose runs it
    # before every start).
    chain = _chain(args.ca_chain)
    datadir.check(args.data_dir)
    # First, so that the type asked for is the one made; the rest follows the defaults.
    args.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    (args.data_dir / "keys").mkdir(exist_ok=True, mode=0o700)
    load_or_create_log_key(args.data_dir / "keys" / REKOR_V2_KEY_FILE, args.rekor_v2_key_type)
    if chain is None:
        from services.ca import keys as ca_keys

        key_type = ca_keys.CAKeyType(args.ca_key_type or CA_KEY_TYPES[0])
        ca_keys.load_or_create(args.data_dir, datetime.now(UTC), key_type=key_type)
    elif args.ca_key_type is not None:
        raise OperatorError("--ca-key-type is for a CA generated here, not one given by --ca-chain")
    for line in describe(gather(args.data_dir, datetime.now(UTC), ca_chain=chain, create=True)):
        print(line)
    return 0


def _keys_retire_v2(args: argparse.Namespace) -> int:
    import asyncio
    from datetime import UTC, datetime

    from services import datadir
    from services.app import tree_id_for_key
    from services.db import Database
    from services.keys import load_or_create_log_key, load_public_log_key, write_public_key
    from services.log.checkpoint import is_frozen, key_id
    from services.log.sqlstore import SQLLogStore
    from services.settings import default_database_url
    from services.trust.documents import base_url
    from services.trust.material import (
        REKOR_V2_KEY_FILE,
        REKOR_V2_PUBLIC_FILE,
        retire_rekor_v2,
    )

    datadir.check(args.data_dir)
    _, host = base_url(args.rekor_v2_url, "--rekor-v2-url")
    keys = args.data_dir / "keys"
    if not (keys / REKOR_V2_PUBLIC_FILE).is_file():
        raise OperatorError(f"{keys / REKOR_V2_PUBLIC_FILE}: no Rekor v2 log key to retire")
    tree_id = tree_id_for_key(key_id(load_public_log_key(keys / REKOR_V2_PUBLIC_FILE)))

    async def check() -> None:
        db = Database(args.database_url or default_database_url(args.data_dir))
        try:
            store = SQLLogStore(db)
            head, origin = await store.read_head(tree_id), await store.read_origin(tree_id)
        finally:
            await db.dispose()
        if head is None:
            raise OperatorError(f"the database holds no tree {tree_id} for keys/rekor-v2.pem")
        if origin != host:
            raise OperatorError(
                f"the log's origin is {origin!r}, not {host!r}: --rekor-v2-url is the URL the "
                "retiring log has had"
            )
        if not is_frozen(head.checkpoint):
            raise OperatorError(
                "the Rekor v2 log is not frozen: start it (every replica) once with "
                "--rekor-v2-freeze, so that its final checkpoint is signed, then retire it"
            )

    asyncio.run(check())
    retired = retire_rekor_v2(
        args.data_dir, args.rekor_v2_url.rstrip("/"), tree_id, datetime.now(UTC)
    )
    key = load_or_create_log_key(keys / REKOR_V2_KEY_FILE, args.rekor_v2_key_type)
    write_public_key(keys / REKOR_V2_PUBLIC_FILE, key.public_key(), like=keys / REKOR_V2_KEY_FILE)
    print(f"retired: Rekor v2 log {retired.url} (tree {tree_id}), keys in keys/retired/")
    print(
        "next: publish the new log under its own host (sigstead trust publish ... "
        "--rekor-version 2 --rekor-v2-url https://NEW-HOST) and start with the same "
        "--rekor-v2-url; the retired log stays readable at its host"
    )
    return 0


def _trust_options(args: argparse.Namespace, data_dir: Path) -> TrustOptions:
    from services.trust.publish import (
        TrustOptions,
        parse_services,
        published_settings,
    )

    if args.services is not None:
        services = parse_services(args.services)
    else:
        published = published_settings(data_dir)
        services = frozenset(PUBLISHABLE) if published is None else published.services
    return TrustOptions(
        args.public_url,
        operator=args.operator,
        oidc_urls=args.oidc_url,
        ca_chain=_chain(args.ca_chain),
        services=services,
        rekor_version=args.rekor_version,
        rekor_v2_url=args.rekor_v2_url,
    )


def _trust_export(args: argparse.Namespace) -> int:
    import contextlib
    from datetime import UTC, datetime

    from services import datadir
    from services.trust.material import MissingKeysError, gather
    from services.trust.publish import describe_services, export, tuf_repository

    options = _trust_options(args, args.data_dir)
    # An export only reads what the server publishes, and takes no claim: it must work while
    # the server runs. Before the first publication it publishes itself, as the one publisher.
    first = tuf_repository(args.data_dir).published() is None
    with contextlib.ExitStack() as stack:
        if first:
            datadir.check(args.data_dir)
            if not args.init:
                # Before the claim, which would write into a mistyped data directory.
                try:
                    gather(
                        args.data_dir,
                        datetime.now(UTC),
                        ca_chain=options.ca_chain,
                        create=False,
                        services=options.services,
                    )
                except MissingKeysError as exc:
                    raise MissingKeysError(f"{exc} (or pass --init)") from None
            stack.enter_context(
                datadir.claimed(
                    args.data_dir,
                    command="trust export",
                    url=options.public_url,
                    exclusive=False,
                    publisher=True,
                )
            )
        try:
            exported = export(
                args.data_dir,
                options,
                args.out,
                datetime.now(UTC),
                identity=args.identity,
                issuer=args.issuer,
                images=args.images,
                builder=args.builder_id,
                create_keys=args.init,
            )
        except MissingKeysError as exc:
            raise MissingKeysError(f"{exc} (or pass --init)") from None
    published = exported.published
    print(
        f"wrote {args.out} for {options.endpoints.base}, publishing "
        f"{describe_services(exported.services)}: trusted root, signing config, client trust "
        f"config, TUF repository (root v{published.root}, targets v{published.targets}) and "
        + ("snippets" if "ca" in exported.services else "PEM keys (no CA: no policy snippets)")
    )
    return 0


def _trust_publish(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from services import datadir
    from services.trust.publish import (
        describe_services,
        difference,
        publish,
        published_settings,
    )

    options = _trust_options(args, args.data_dir)
    if not args.data_dir.is_dir():
        raise OperatorError(f"{args.data_dir} is not a data directory: check --data-dir")
    with datadir.claimed(
        args.data_dir,
        command="trust publish",
        url=options.public_url,
        exclusive=False,
        publisher=True,
    ):
        before = published_settings(args.data_dir)
        exported = publish(args.data_dir, options, datetime.now(UTC), create_keys=False)
    change = None if before is None else difference(before, options.publication)
    what = (
        "nothing changed"
        if before is not None and change is None
        else "first publication"
        if change is None
        else f"{change.what} {change.published} -> {change.wanted}"
    )
    print(
        f"published {describe_services(options.services)} at {options.endpoints.base} "
        f"(targets v{exported.published.targets}; {what}); start the servers with these settings"
    )
    return 0


def _fsck(args: argparse.Namespace) -> int:
    import asyncio
    import json
    import time

    from services.audit.fsck import TreeReport, fsck
    from services.audit.remote import fsck_remote, remote_logs
    from services.db import Database
    from services.settings import default_database_url

    url = args.database_url or default_database_url(args.data_dir)
    emit_json = args.json or not sys.stdout.isatty()

    started: dict[int, float] = {}
    shown = [0.0]

    def progress(tree: int, done: int, total: int) -> None:
        now = time.monotonic()
        began = started.setdefault(tree, now)
        if now - shown[0] < (1.0 if emit_json else 0.25) and done < total:
            return
        shown[0] = now
        rate = done / (now - began) if now > began else 0.0
        eta = (total - done) / rate if rate else 0.0
        if emit_json:
            line = {"tree": tree, "checked": done, "size": total, "leaves_per_second": round(rate)}
            print(json.dumps(line), flush=True)
        else:
            end = "\n" if done >= total else ""
            print(
                f"\rtree {tree}: {done:,} of {total:,} entries, {rate:,.0f}/s, ETA {eta:,.0f} s  ",
                end=end,
                flush=True,
            )

    async def run() -> int:
        if args.url is not None:
            if args.trusted_root is None:
                raise OperatorError("--url needs --trusted-root (the keys to check the logs by)")
            try:
                document = json.loads(args.trusted_root.read_bytes())
            except (OSError, ValueError) as exc:
                raise OperatorError(f"--trusted-root {args.trusted_root}: {exc}") from None
            reports = await fsck_remote(remote_logs(document, args.url), progress=progress)
            return report(reports)
        db = Database(url)
        try:
            reports = await fsck(
                db, args.data_dir, deep=args.deep, index=not args.skip_index, progress=progress
            )
        finally:
            await db.dispose()
        return report(reports)

    def report(reports: list[TreeReport]) -> int:
        for r in reports:
            rate = r.size / r.seconds if r.seconds else 0.0
            if emit_json:
                print(json.dumps({"tree": r.tree_id, "origin": r.origin, "ok": True,
                                  "size": r.size, "checkpoints": r.checkpoints, "tiles": r.tiles,
                                  "seals": r.seals, "indexed": r.indexed,
                                  "verified": r.verified,
                                  "leaves_per_second": round(rate)}))  # fmt: skip
            else:
                print(
                    f"ok  {r.origin}: {r.size:,} entries, {r.tiles:,} tiles, {r.checkpoints:,} "
                    f"checkpoints, {r.seals:,} SETs, {r.indexed:,} indexed, {r.verified:,} "
                    f"re-verified ({rate:,.0f} leaves/s)"
                )
        return 0

    return asyncio.run(run())


def _monitor(args: argparse.Namespace) -> int:
    import asyncio
    import json

    import aiohttp

    from services.audit.monitor import Monitor, load_watchlist
    from services.audit.remote import remote_logs
    from services.log.witnessing import PolicyError, WitnessKey

    try:
        document = json.loads(args.trusted_root.read_bytes())
    except (OSError, ValueError) as exc:
        raise OperatorError(f"--trusted-root {args.trusted_root}: {exc}") from None
    logs = remote_logs(document, args.url)
    watch = load_watchlist(args.config)
    pending: list[dict[str, object]] = []

    def emit(event: dict[str, object]) -> None:
        print(json.dumps(event), flush=True)
        pending.append(event)

    try:
        witnesses = [WitnessKey.parse(v) for v in args.witness]
    except PolicyError as exc:
        raise OperatorError(f"--witness: {exc}") from None
    quorum = len(witnesses) if args.witness_quorum is None else args.witness_quorum
    if not 0 <= quorum <= len(witnesses):
        raise OperatorError(f"--witness-quorum {quorum}: between 0 and {len(witnesses)}")
    monitor = Monitor(
        logs,
        watch,
        args.state,
        emit,
        peers=args.peer,
        witnesses=witnesses,
        quorum=quorum,
        from_now=args.from_now,
    )

    async def deliver(session: aiohttp.ClientSession) -> None:
        events, pending[:] = list(pending), []
        for event in events if args.webhook else []:
            try:
                async with session.post(args.webhook, json=event) as reply:
                    if reply.status >= 300:
                        print(f"sigstead: webhook answered {reply.status}", file=sys.stderr)
            except aiohttp.ClientError as exc:
                print(f"sigstead: webhook: {exc}", file=sys.stderr)

    async def run() -> int:
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                matches, alarms, errors = await monitor.check(session)
                await deliver(session)
                if args.once:
                    return 2 if alarms else 3 if errors else 1 if matches else 0
                await asyncio.sleep(args.interval)

    return asyncio.run(run())


def _backup(args: argparse.Namespace) -> int:
    from services.backup import BackupError, backup

    try:
        made = backup(args.data_dir, args.out, database_url=args.database_url)
    except BackupError as exc:
        raise OperatorError(f"not backed up: {exc}") from None
    print(f"wrote {made.path}: {len(made.files)} key and TUF files")
    if made.database is None:
        print("database: not SQLite; back it up now with pg_dump (docs/deploy.md)")
    else:
        trees = ", ".join(f"{origin!r} at size {size}" for origin, size in made.trees)
        print(f"database: {made.database.name} ({trees or 'no tree yet'})")
    return 0


def _dev_issuer_init(args: argparse.Namespace) -> int:
    from services.ca import devissuer

    print(devissuer.init(args.dir, args.issuer))
    return 0


def _dev_issuer_token(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from services.ca import devissuer

    token = devissuer.token(args.dir, args.email, datetime.now(UTC))
    if args.out is None:
        print(token)
        return 0
    try:
        # A bearer credential for ten minutes: 0600 from creation, and fchmod because O_CREAT's
        # mode does not apply to a file that already exists.
        fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(token)
    except OSError as e:
        raise OperatorError(f"cannot write the token to {args.out}: {e.strerror}") from e
    return 0


def _witness_init(args: argparse.Namespace) -> int:
    from services.witness.statedir import init_state

    print(init_state(args.state_dir, args.name).vkey)
    return 0


def _witness_serve(args: argparse.Namespace) -> int:
    from services.witness.server import read_logs, serve
    from services.witness.statedir import load_cosigner

    if not 0 < args.port < 65536:
        raise OperatorError(f"--port {args.port}: not a TCP port (1 to 65535)")
    # Both are checked before the port is taken, so a mistake there is one line.
    load_cosigner(args.state_dir)
    read_logs(args.logs)
    sockets = _listen_sockets(args.host, args.port)
    try:
        serve(args.state_dir, args.logs, sockets, access_log=args.access_log)
    finally:
        for sock in sockets:
            sock.close()
    return 0


def _witness_log_vkey(args: argparse.Namespace) -> int:
    from services.keys import load_public_log_key
    from services.witness.note import NoteError, log_vkey

    key = load_public_log_key(args.public_key)
    try:
        vkey = log_vkey(args.name, key)
    except NoteError as exc:
        raise OperatorError(f"--name: {exc}") from None
    origin = args.origin or args.name
    if "\n" in origin or origin != origin.strip():
        raise OperatorError(f"--origin {origin!r}: one line, without surrounding spaces")
    print(vkey if origin == args.name else f"{vkey} {origin}")
    return 0


def _db_upgrade(args: argparse.Namespace) -> int:
    import asyncio

    from services.db import Database, display_url
    from services.migrate import upgrade

    async def run() -> None:
        db = Database(args.database_url)
        try:
            await db.check()
            await upgrade(db)
        finally:
            await db.dispose()

    asyncio.run(run())
    print(f"{display_url(args.database_url)}: at the newest schema")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the process exit status."""
    args = _parser().parse_args(argv)
    verbose = bool(getattr(args, "verbose", False))
    handler = logging.StreamHandler(sys.stderr)
    if getattr(args, "log_format", "text") == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])
    server_log = logging.getLogger("aiohttp.server")
    if not verbose and not any(isinstance(f, QuietBadRequests) for f in server_log.filters):
        server_log.addFilter(QuietBadRequests())
    if not verbose:
        # Alembic narrates its set-up at INFO on every start; the start line says what matters.
        logging.getLogger("alembic").setLevel(logging.WARNING)
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        return run(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if verbose:
            raise  # the traceback, as asked
        print(f"sigstead: {_describe(exc)}", file=sys.stderr)
        return 1


class QuietBadRequests(logging.Filter):
    """Turn aiohttp's ERROR with a traceback for a request it could not parse into one INFO line.

    aiohttp answers a malformed request (a bad header, an over-long line, a bad method past a
    connection's first request) with a 400 and logs it at ERROR with its traceback: the client's
    error, and any client can fill the log with them. Its own errors (5xx) are left as they are.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        from aiohttp.http_exceptions import HttpProcessingError

        exc = record.exc_info[1] if record.exc_info else None
        if (
            record.levelno >= logging.ERROR
            and isinstance(exc, HttpProcessingError)
            and 400 <= (exc.code or 400) < 500
        ):
            lines = str(exc.message).strip().splitlines() or [type(exc).__name__]
            record.msg = f"{record.getMessage()}: {exc.code} {lines[0].rstrip(':')}"
            record.args = ()
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


class JSONFormatter(logging.Formatter):
    """One JSON object a line: ``time`` (RFC 3339, UTC), ``level``, ``logger``, ``message``, and
    ``exception`` when there is one. Messages never carry key material (they never have)."""

    def format(self, record: logging.LogRecord) -> str:
        import json
        from datetime import UTC, datetime

        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def _describe(exc: Exception) -> str:
    """One line for an error: the message of one the operator can fix, else a bug report."""
    if isinstance(exc, OperatorError | ClientError):
        label = getattr(exc, "label", None)
        text = " ".join(str(exc).split())
        return f"{label}: {text}" if label else text
    if isinstance(exc, OSError) and exc.filename is not None:
        # A file or directory the operator named: which one, and why, is the whole story.
        return f"{exc.filename}: {exc.strerror}"
    return (
        f"unexpected error: {type(exc).__name__}: {exc} (run with -v for the traceback, and "
        "please report it)"
    )


if __name__ == "__main__":
    sys.exit(main())
