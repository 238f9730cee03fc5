"""``deploy/nginx.conf``, read and run: its routing parsed for tests/test_compose.py, and the file
itself run in the real nginx for the production-layout end-to-end tests.

Reading understands only the subset of nginx the TLS server block uses: ``upstream NAME {
server HOST:PORT; … }`` and ``location [=] PATH { proxy_pass http://TARGET[/URI]; }`` or ``{
return 404; }``, chosen as nginx chooses among prefix locations: an exact match, else the longest
matching prefix. A file using anything else there fails to parse rather than being half
understood.

Running changes nothing but addresses and paths: the listen ports, the compose host names of the
upstreams (``log-1:3000`` …) and the certificate directory, each replaced where the file names
it; nginx is then started on that text, with its logs and temporary files in a directory of the
test's own.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import pwd
import re
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

_LOCATION = re.compile(
    r"location\s+(=\s+)?(\S+)\s*\{\s*"
    r"(?:proxy_pass\s+http://([\w-]+)(?::\d+)?(/\S*)?;|return 404;)\s*\}"
)
_SERVER = re.compile(r"server\s+([\w-]+):\d+;")
_BLOCK = re.compile(r"^(upstream\s+(\w+)|server)\s*\{", re.MULTILINE)
CERT_DIR = "/etc/nginx/tls"


@dataclass(frozen=True)
class Location:
    exact: bool
    path: str
    target: str | None  # an upstream or a host; None answers 404
    uri: str | None  # what replaces the matched path upstream (proxy_pass with a URI)


@dataclass(frozen=True)
class Routes:
    """The locations of the TLS server block, its upstreams, and the plain-HTTP block's text."""

    locations: list[Location]
    upstreams: dict[str, list[str]]
    plain: str

    def location(self, path: str) -> Location:
        for loc in self.locations:
            if loc.exact and loc.path == path:
                return loc
        prefixes = [loc for loc in self.locations if not loc.exact and path.startswith(loc.path)]
        if not prefixes:
            raise LookupError(f"no location matches {path}")
        return max(prefixes, key=lambda loc: len(loc.path))

    def hosts(self, path: str) -> list[str]:
        """Every host that may answer ``path`` (none: nginx answers 404 itself)."""
        target = self.location(path).target
        if target is None:
            return []
        return self.upstreams.get(target, [target])

    def upstream_path(self, path: str) -> str:
        """The path the service is asked for: ``path``, or a location's URI in its place."""
        loc = self.location(path)
        return path if loc.uri is None else loc.uri + path[len(loc.path) :]


def _body(conf: str, open_brace: int) -> str:
    """The text between the brace at ``open_brace`` and its match (quotes and comments skipped)."""
    depth, i, quote = 0, open_brace, ""
    while i < len(conf):
        c = conf[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == quote:
                quote = ""
        elif c in "'\"":
            quote = c
        elif c == "#":
            i = conf.index("\n", i)
        elif c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return conf[open_brace + 1 : i]
        i += 1
    raise ValueError("an unbalanced block")


def parse(conf: str) -> Routes:
    """Read ``conf``; raise ``ValueError`` on anything in the TLS server this reader cannot
    follow, or unless there is exactly one TLS server and one plain one."""
    upstreams: dict[str, list[str]] = {}
    tls: list[str] = []
    plain: list[str] = []
    for match in _BLOCK.finditer(conf):
        body = _body(conf, match.end() - 1)
        if match.group(2):
            upstreams[match.group(2)] = _SERVER.findall(body)
        elif re.search(r"^\s*listen\s+[^;]*\bssl\b", body, re.MULTILINE):
            tls.append(body)
        else:
            plain.append(body)
    if len(tls) != 1 or len(plain) != 1:
        raise ValueError(
            f"want one TLS and one plain server block, not {len(tls)} and {len(plain)}"
        )
    if any(not members for members in upstreams.values()):
        raise ValueError("an upstream without servers")
    locations = [
        Location(bool(exact), path, target or None, uri or None)
        for exact, path, target, uri in _LOCATION.findall(tls[0])
    ]
    if len(locations) != len(re.findall(r"^\s*location\s", tls[0], re.MULTILINE)):
        raise ValueError("a location this reader cannot follow")
    return Routes(locations, upstreams, plain[0])


def rewrite(conf: str, *, http: str, https: str, hosts: Mapping[str, str], tls_dir: Path) -> str:
    """``conf`` listening on ``http`` and ``https`` (HOST:PORT), its compose host names
    (``log-1:3000`` …) replaced by ``hosts``' addresses, its certificates read from ``tls_dir``."""
    out, count = re.subn(r"listen 8080;", f"listen {http};", conf)
    assert count == 1, "the plain listener"
    out, count = re.subn(r"listen 8443 ssl;", f"listen {https} ssl;", out)
    assert count == 1, "the TLS listener"
    assert CERT_DIR in out
    out = out.replace(f"{CERT_DIR}/", f"{tls_dir}/")
    for host, address in hosts.items():
        out, count = re.subn(rf"\b{re.escape(host)}:3000\b", address, out)
        assert count, f"{host} is not in the file"
    assert ":3000" not in out, "a host without an address"
    return out


@dataclass
class Nginx:
    """A running nginx."""

    process: subprocess.Popen[bytes]
    directory: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()  # SIGTERM: fast shutdown
            self.process.wait(timeout=10)

    @property
    def error_log(self) -> str:
        return (self.directory / "error.log").read_text()


def nginx_binary() -> str:
    exe = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if exe is None:
        pytest.fail("nginx is not installed: apt-get install nginx-light")
    return exe


def _main_conf(directory: Path) -> str:
    # As root the workers would otherwise run as nobody, who cannot read the test's files.
    user = f"user {pwd.getpwuid(os.getuid()).pw_name};" if os.geteuid() == 0 else ""
    temp = "\n".join(
        f"    {kind}_temp_path {directory / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""{user}
daemon off;
worker_processes 1;
pid {directory / "nginx.pid"};
error_log {directory / "error.log"} info;
events {{ worker_connections 256; }}
http {{
    access_log {directory / "access.log"};
{temp}
    include {directory / "sigstead.conf"};
}}
"""


def check(site: str, directory: Path) -> subprocess.CompletedProcess[str]:
    """``nginx -t`` on ``site`` (a conf.d file, already rewritten)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "sigstead.conf").write_text(site)
    (directory / "nginx.conf").write_text(_main_conf(directory))
    return subprocess.run(
        [nginx_binary(), "-t", "-p", str(directory), "-e", str(directory / "error.log"),
         "-c", str(directory / "nginx.conf")],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


def start(site: str, directory: Path, ready_url: str, *, ca_file: Path) -> Nginx:
    """Check and start nginx on ``site``; return once ``ready_url`` answers over TLS."""
    checked = check(site, directory)
    assert checked.returncode == 0, checked.stderr
    process = subprocess.Popen(
        [nginx_binary(), "-p", str(directory), "-e", str(directory / "error.log"),
         "-c", str(directory / "nginx.conf")],
    )  # fmt: skip
    server = Nginx(process, directory)
    context = ssl.create_default_context(cafile=str(ca_file))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"nginx exited with {process.returncode}: {server.error_log}")
        try:
            with urllib.request.urlopen(ready_url, timeout=1, context=context):
                return server
        except urllib.error.HTTPError:
            return server  # nginx answers; the route's own status is the test's business
        except OSError:
            time.sleep(0.1)
    server.stop()
    raise RuntimeError("nginx did not answer in 30 s")


def make_tls(directory: Path, host: str = "127.0.0.1") -> Path:
    """A CA and a certificate for ``host`` (an IP address or a name), as ``fullchain.pem`` and
    ``privkey.pem`` in ``directory`` (what compose mounts at /etc/nginx/tls); return the CA file
    a client must trust."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sigstead test TLS CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    try:
        san: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        san = x509.DNSName(host)
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([san]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    pem = serialization.Encoding.PEM
    (directory / "fullchain.pem").write_bytes(leaf.public_bytes(pem) + ca.public_bytes(pem))
    (directory / "privkey.pem").write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    (directory / "privkey.pem").chmod(0o600)
    (directory / "ca.pem").write_bytes(ca.public_bytes(pem))
    return directory / "ca.pem"
