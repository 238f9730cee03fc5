"""``sigstead log``'s ordinary mistakes: each one line saying what is wrong, never a traceback."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.serverproc import Server, free_port
from tests.services.test_cli import refused, sigstead, unprivileged


def log(url: str, state: Path, *args: str, prefix: tuple[str, ...] = ()) -> list[str]:
    return ["log", "--url", url, "--state-dir", str(state), *args]


def _pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


class _Page(http.server.BaseHTTPRequestHandler):
    """A web server that is not a Rekor log: one HTML page at every path."""

    def do_GET(self) -> None:
        body = b"<html><body>welcome</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


class _NotFound(_Page):
    def do_GET(self) -> None:
        self.send_error(404)


@pytest.fixture(params=[_NotFound, _Page], ids=["404", "html"])
def not_a_log(request: pytest.FixtureRequest) -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), request.param)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_url_that_is_not_a_rekor_log(not_a_log: str, tmp_path: Path) -> None:
    done = sigstead(*log(not_a_log, tmp_path / "state", "info"))
    refused(done, f"{not_a_log}")
    assert "not a Rekor log" in done.stderr
    assert not (tmp_path / "state").exists()  # nothing pinned


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("htp:/log.example", "--url 'htp:/log.example': want http(s)://HOST[:PORT]"),
        ("http://log.example:port", "--url 'http://log.example:port': Port could not be cast"),
        ("log.example:3000", "want http(s)://HOST[:PORT]"),
    ],
)
def test_a_malformed_url(tmp_path: Path, url: str, message: str) -> None:
    refused(sigstead(*log(url, tmp_path / "state", "info")), message)


def test_a_url_nothing_answers(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    refused(sigstead(*log(url, tmp_path / "state", "info")), f"could not reach {url}: ")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--log-key", "{tmp}/missing.pem", "info"], "--log-key {tmp}/missing.pem: No such file"),
        (["--log-key", "{tmp}/not.pem", "info"], "--log-key {tmp}/not.pem is not a PEM public"),
        (["search", "--artifact", "{tmp}/missing"], "--artifact {tmp}/missing: No such file"),
        (["search", "--public-key", "{tmp}/missing"], "--public-key {tmp}/missing: No such"),
        (["search", "--public-key", "{tmp}/not.pem"], "not a PEM public key or certificate"),
    ],
)
def test_a_file_that_is_missing_or_not_a_key(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "not.pem").write_text("hello\n")
    args = [a.format(tmp=tmp_path) for a in args]
    # No server: local files are read before anything is fetched.
    url = f"http://127.0.0.1:{free_port()}"
    refused(sigstead(*log(url, tmp_path / "state", *args)), message.format(tmp=tmp_path))


def test_a_state_dir_that_cannot_be_written(server: Server, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    done = sigstead(*log(server.url, tmp_path / "file" / "state", "info"))
    refused(done, f"--state-dir {tmp_path / 'file' / 'state'}: cannot read")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    done = sigstead(*log(server.url, locked, "info"), prefix=unprivileged())
    refused(done, f"--state-dir {locked}: cannot write")


def test_a_replaced_key_says_how_to_pin_anew(server: Server, tmp_path: Path) -> None:
    state = tmp_path / "state"
    assert sigstead(*log(server.url, state, "info")).returncode == 0
    (pin,) = state.glob("*.json")
    other = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "other.pem").write_bytes(_pem(other))
    done = sigstead(*log(server.url, state, "--log-key", str(tmp_path / "other.pem"), "info"))
    refused(done, f"the given log key differs from the one pinned in {pin} on first use; if")
    # The pin itself no longer matches the log (as if its operator had replaced the key).
    saved = json.loads(pin.read_text())
    saved["public_key"] = _pem(other).decode()
    pin.write_text(json.dumps(saved))
    done = sigstead(*log(server.url, state, "info"))
    line = refused(done, "VERIFICATION FAILED: checkpoint has no signature by log key")
    assert f"pinned in {pin} on first use: if the log's key was really replaced" in line
