"""Interop: what the witness serves verifies in Go, under golang.org/x/mod/sumdb/note with
transparency-dev/formats's verifiers for the log's ECDSA vkey and the witness's cosignature/v1
vkey (tests/go/cosigcheck, which shares no code with sigstead)."""

from __future__ import annotations

import asyncio
import base64
import subprocess
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives.asymmetric import ed25519

from services.db import Database, sqlite_url
from services.witness.app import create_witness_app
from services.witness.note import Cosigner
from services.witness.state import WitnessStore, origin_hash
from services.witness.witness import Witness
from tests.gotools import ToolMissing
from tests.services.witness.test_app import NOW, ORIGIN, VKEY, AiohttpClient, request

COSIGCHECK = Path(__file__).parents[2] / "go" / "cosigcheck"


@pytest.fixture(scope="module")
def cosigcheck(tmp_path_factory: pytest.TempPathFactory) -> Path:
    binary = tmp_path_factory.mktemp("go") / "cosigcheck"
    built = subprocess.run(
        ["go", "build", "-o", str(binary), "."],
        cwd=COSIGCHECK, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    if built.returncode != 0:
        raise ToolMissing(f"go build tests/go/cosigcheck: {built.stderr}")
    return binary


async def run(binary: Path, *args: str) -> tuple[int | None, str, str]:
    process = await asyncio.create_subprocess_exec(
        binary, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode, out.decode(), err.decode()


async def test_go_verifies_the_log_signature_and_the_cosignature(
    aiohttp_client: AiohttpClient, tmp_path: Path, cosigcheck: Path
) -> None:
    db = Database(sqlite_url(tmp_path / "witness.db"))
    try:
        cosigner = Cosigner("witness.example/w1", ed25519.Ed25519PrivateKey.generate())
        witness = Witness(WitnessStore(db), cosigner)
        await witness.store.create()
        await witness.configure({ORIGIN: (VKEY,)})
        client: TestClient[Any, Any] = await aiohttp_client(
            create_witness_app(witness, clock=lambda: NOW)
        )
        async with client.post("/add-checkpoint", data=request(0, 123)) as reply:
            assert reply.status == 200
        async with client.get(f"/{origin_hash(ORIGIN)}/checkpoint") as reply:
            served = await reply.text()
    finally:
        await db.dispose()

    note = tmp_path / "note"
    note.write_text(served)
    status, out, err = await run(cosigcheck, VKEY, cosigner.vkey, str(note))
    assert status == 0, err
    assert out.strip() == str(NOW)

    # The same check refuses a cosignature with one bit changed.
    head, _, line = served.rstrip("\n").rpartition("\n")
    raw = bytearray(base64.b64decode(line.split(" ")[2]))
    raw[-1] ^= 1
    note.write_text(f"{head}\n\u2014 witness.example/w1 {base64.b64encode(raw).decode()}\n")
    status, _, err = await run(cosigcheck, VKEY, cosigner.vkey, str(note))
    assert status == 1
    assert "open:" in err
