"""Hostile or careless operator configuration: the HTTP adapter's tokens as
``serve --http`` reads them.

Contract (docs/operations.md, "Access control (HTTP)"; the service README): every scope needs
a token; an unusable token or token file stops ``serve`` (status 2) "with a message naming the
variable"; errors never echo a token.

The tests whose docstrings name a defect were failing before its fix (found by an attack on
operator configuration), with tracebacks, values that failed later, or silence.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pipeline_state_http import HttpSettings

GOOD = {
    "PIPELINE_STATE_HTTP_API_TOKEN": "api-token-0123456789",
    "PIPELINE_STATE_HTTP_INTERNAL_TOKEN": "internal-token-0123456789",
    "PIPELINE_STATE_HTTP_OPS_TOKEN": "ops-token-0123456789",
}


@pytest.mark.parametrize(
    "token", ["s3cret tok", "s3cret\ntok", "s3cretT\u00f6k"], ids=["space", "newline", "non-ascii"]
)
def test_a_token_a_header_cannot_carry_is_refused_naming_its_variable(token: str) -> None:
    """A token with an inner space, a line break or a non-ASCII letter is refused (good), but
    the one line ``serve`` prints is "cannot serve HTTP: api_token must be made of the
    characters a bearer token can carry ..." - ``api_token`` is the attribute of
    ``HttpSettings`` (pipeline_state_http/settings.py:97-101, ``attribute.name``), not the
    ``PIPELINE_STATE_HTTP_API_TOKEN`` the operator set. ``Settings._tokens_usable`` checks
    only surrounding spaces (``token_from_environ``). Expected: the message names the
    variable. Fix: apply the RFC 6750 check in ``token_from_environ`` with ``variable``."""
    with pytest.raises(ValueError, match="PIPELINE_STATE_HTTP_API_TOKEN") as refused:
        HttpSettings.from_environ({**GOOD, "PIPELINE_STATE_HTTP_API_TOKEN": token})
    assert "s3cret" not in str(refused.value)


def _from_token_file(tmp_path: Path, content: bytes) -> HttpSettings:
    """The settings with the token given only as a file holding ``content``."""
    path = tmp_path / "token"
    path.write_bytes(content)
    env = {k: v for k, v in GOOD.items() if k != "PIPELINE_STATE_HTTP_API_TOKEN"}
    return HttpSettings.from_environ({**env, "PIPELINE_STATE_HTTP_API_TOKEN_FILE": str(path)})


def test_a_token_file_holding_two_lines_is_refused_naming_the_file_variable(
    tmp_path: Path,
) -> None:
    """A mounted secret file with two lines (``tokA\\ntokB\\n``: one trailing newline is
    removed, the inner one stays): refused, but as "api_token must be made of the characters
    ...": neither ``PIPELINE_STATE_HTTP_API_TOKEN_FILE`` nor the file is named (the same cause
    as above). Expected: the message names the ``_FILE`` variable."""
    with pytest.raises(ValueError, match="PIPELINE_STATE_HTTP_API_TOKEN_FILE") as refused:
        _from_token_file(tmp_path, b"tokA\ntokB\n")
    assert "tokA" not in str(refused.value)


def test_a_token_file_with_a_crlf_ending_is_read_as_the_token(tmp_path: Path) -> None:
    """Held: a secret file written on Windows (``TOKEN\\r\\n``) gives ``TOKEN``."""
    settings = _from_token_file(tmp_path, b"api-token-from-file-0123\r\n")
    assert settings.api_token == "api-token-from-file-0123"


@pytest.mark.parametrize(
    "content", [b"\xff\xfe", b"", b"\n", b"  tok  \n"], ids=["binary", "empty", "newline", "spaces"]
)
def test_an_unusable_token_file_names_its_variable(tmp_path: Path, content: bytes) -> None:
    """Held: refused naming ``PIPELINE_STATE_HTTP_API_TOKEN_FILE``, the content not echoed."""
    with pytest.raises(ValueError, match="PIPELINE_STATE_HTTP_API_TOKEN_FILE") as refused:
        _from_token_file(tmp_path, content)
    assert "tok " not in str(refused.value)


def test_a_token_given_both_ways_is_refused(tmp_path: Path) -> None:
    """Held: the variable and its ``_FILE`` both set: refused naming both."""
    path = tmp_path / "token"
    path.write_text("api-token-from-file-0123\n")
    with pytest.raises(ValueError, match="PIPELINE_STATE_HTTP_API_TOKEN_FILE"):
        HttpSettings.from_environ({**GOOD, "PIPELINE_STATE_HTTP_API_TOKEN_FILE": str(path)})


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PIPELINE_STATE_HTTP_HEADER_TIMEOUT_SECONDS", "nan"),
        ("PIPELINE_STATE_HTTP_BODY_TIMEOUT_SECONDS", "-1"),
        ("PIPELINE_STATE_HTTP_MAX_BODY_BYTES", "0"),
        ("PIPELINE_STATE_HTTP_PUBLIC_METRICS", "maybe"),
    ],
)
def test_unusable_http_limits_are_refused_naming_the_variable(variable: str, value: str) -> None:
    """Held."""
    with pytest.raises(ValueError, match=variable):
        HttpSettings.from_environ({**GOOD, variable: value})
