"""Error classes carry Rekor's status, code and message shape."""

from __future__ import annotations

import pytest
import rekor_types

from services.log.rekor.errors import (
    AlgorithmNotAllowed,
    EntryRejected,
    MalformedEntry,
    MalformedJSON,
    NotInsertable,
    RekorError,
    SchemaViolation,
    UnknownKind,
    UnsupportedKind,
)


@pytest.mark.parametrize(
    ("error", "status", "body"),
    [
        (MalformedJSON("unexpected end of JSON input"), 400,
         {"code": 400, "message": 'parsing proposedEntry body from "" failed, because '
          "unexpected end of JSON input"}),
        (SchemaViolation("spec in body is required"), 422,
         {"code": 602, "message": "spec in body is required"}),
        (UnknownKind("x"), 422, {"code": 422, "message": 'invalid kind value: "x"'}),
        (UnsupportedKind("rpm"), 400,
         {"code": 400,
          "message": "error processing entry: could not unmarshal entry for kind 'rpm'"}),
        (AlgorithmNotAllowed(), 400,
         {"code": 400, "message": "error processing entry: entry algorithms are not allowed"}),
        (NotInsertable("missing proposed content"), 400,
         {"code": 400, "message": "error processing entry: entry not insertable into log: "
          "missing proposed content"}),
    ],
)  # fmt: skip
def test_status_and_body(error: RekorError, status: int, body: dict[str, object]) -> None:
    assert error.status == status
    assert error.to_json() == body
    # The body is what sigstore-python's RekorClientError parses.
    assert rekor_types.Error.model_validate(error.to_json()).message == body["message"]


def test_entry_rejections_share_prefix_and_keep_detail() -> None:
    error = MalformedEntry("invalid value for hash")
    assert isinstance(error, EntryRejected)
    assert error.detail == "invalid value for hash"
    assert str(error) == "error processing entry: invalid value for hash"
    assert "MalformedEntry(status=400" in repr(error)


def test_plain_rekor_error_defaults_to_400() -> None:
    assert RekorError("unknown treeID 5").to_json() == {"code": 400, "message": "unknown treeID 5"}
