"""Pure parts of the Chatbase client: error answers and userId rules."""

from __future__ import annotations

import pytest

from bridge.chatbase.client import api_error, check_user_id
from bridge.core.errors import ChatbaseAPIError, InvalidUserId


def test_error_envelope() -> None:
    raw = (b'{"error":{"code":"VALIDATION_INVALID_BODY","message":"Invalid request",'
           b'"details":{"message":"Required"}}}')
    error = api_error(400, raw, request_id="req-1")
    assert isinstance(error, ChatbaseAPIError)
    assert (error.code, error.api_message, error.status) == (
        "VALIDATION_INVALID_BODY", "Invalid request", 400)
    assert error.details == {"message": "Required"}
    assert error.request_id == "req-1"
    assert "VALIDATION_INVALID_BODY" in str(error) and "req-1" in str(error)


def test_non_json_body_still_reads_well() -> None:
    raw = b"<html>\n  <body>502   Bad Gateway</body>\n</html>\n"
    error = api_error(502, raw, request_id=None, reason="Bad Gateway")
    assert error.code == "HTTP_502"
    assert error.api_message == "<html> <body>502 Bad Gateway</body> </html>"


def test_long_body_is_trimmed() -> None:
    error = api_error(500, b"x" * 5000, request_id=None)
    assert len(error.api_message) == 300


def test_empty_body_uses_the_reason() -> None:
    assert api_error(504, b"", request_id=None, reason="Gateway Timeout").api_message == (
        "Gateway Timeout")
    assert api_error(504, b"", request_id=None).api_message == "no details given"


@pytest.mark.parametrize(
    ("raw", "code", "message"),
    [
        (b'{"error":"Unauthorized"}', "HTTP_401", "Unauthorized"),
        (b'{"message":"nope"}', "HTTP_401", "nope"),
        (b'{"error":{"message":"no code"}}', "HTTP_401", "no code"),
        (b"[1,2]", "HTTP_401", "[1,2]"),
    ],
)
def test_other_json_shapes(raw: bytes, code: str, message: str) -> None:
    error = api_error(401, raw, request_id=None)
    assert (error.code, error.api_message) == (code, message)


@pytest.mark.parametrize("user_id", ["slack.T123.U456", "discord.123456789", "a", "x" * 128,
                                     "cli.j-doe_2"])
def test_legal_user_ids(user_id: str) -> None:
    assert check_user_id(user_id) == user_id


@pytest.mark.parametrize("user_id", ["", "slack:T1/U2", "a@b", "x" * 129, "spa ce", "é",
                                     "line\n"])
def test_illegal_user_ids(user_id: str) -> None:
    with pytest.raises(InvalidUserId):
        check_user_id(user_id)
