"""The CLI's ``--api`` client: a token a header cannot carry and a host httpx cannot decode
are one-line usage errors, and the token is never printed."""

from __future__ import annotations

import pytest
from pipeline_state_http import HttpSettings, PipelineStateClient

from pipeline_state._cli import main

from .conftest import TOKENS
from .serving import served


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("suffix", ["\n", "\t", "\r\n"], ids=["newline", "tab", "crlf"])
def test_an_api_token_a_header_cannot_carry_is_never_printed(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, suffix: str
) -> None:
    """Was a defect (found by an attack on access control).

    Expected: ``$PIPELINE_STATE_API_TOKEN`` holding what a header cannot carry (a trailing
    newline, as a secret mounted from a file often has; a tab; CRLF) is refused with a
    usage error that names the variable, never the token (the server side refuses such a
    token the same way, naming the variable: settings._header_token). Actual: the token is
    put into the ``Authorization`` header as is, httpx/h11 raise ``LocalProtocolError:
    Illegal header value b'Bearer <token>'`` and the CLI prints that message, token and all,
    on stderr (exit 4, "unreachable")."""
    secret = "s3cr3t-operator-token-value"
    monkeypatch.setenv("PIPELINE_STATE_API_TOKEN", secret + suffix)
    with served("memory", HttpSettings(**TOKENS)) as url:
        code, out, err = _run(capsys, "run", "cancel", "b1", "--api", url, "--as", "alice", "--json")
    assert secret not in err + out, f"the token was printed: {err!r}"
    assert code == 2, (code, err)
    assert "PIPELINE_STATE_API_TOKEN" in err, err


def test_a_non_ascii_api_token_is_a_usage_error_not_a_traceback(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Was a defect (found by an attack on access control).

    Expected: a ``$PIPELINE_STATE_API_TOKEN`` that is not ASCII (no bearer token can be:
    RFC 6750, and the server refuses to be configured with one) is a one-line usage error
    naming the variable (exit 2). Actual: httpx raises ``UnicodeEncodeError`` while encoding
    the header, which is neither an operator nor a transport error (ops/exits.py
    ``expected``), so it escapes ``main()`` as a traceback."""
    monkeypatch.setenv("PIPELINE_STATE_API_TOKEN", "tökén-value")
    with served("memory", HttpSettings(**TOKENS)) as url:
        try:
            code, _out, err = _run(capsys, "run", "cancel", "b1", "--api", url, "--as", "alice", "--json")
        except BaseException as exc:  # the defect: it escapes main()
            pytest.fail(f"{type(exc).__name__} escaped main(): {exc}")
    assert code == 2, (code, err)
    assert err.count("\n") == 1, err
    assert "PIPELINE_STATE_API_TOKEN" in err, err


def test_an_api_url_whose_host_is_bad_punycode_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """Was a defect (found by an attack on access control).

    Expected: ``--api`` with a host that is not valid IDNA (``xn--a.com``, a punycode
    label that decodes to a forbidden code point) is a one-line usage error, exit 2, like
    every other malformed ``--api`` (tests/http/test_cli_api_hostile.py). Actual:
    ``api_url`` (pipeline_state_service/ops/remote.py:77) reads ``url.host`` outside its
    ``try``; httpx decodes the label there and raises ``idna.core.InvalidCodepoint``, which
    escapes ``main()`` as a traceback (status 1)."""
    try:
        code, _out, err = _run(
            capsys, "run", "cancel", "b1", "--api", "http://xn--a.com:8080/", "--as", "alice", "--json"
        )
    except BaseException as exc:  # the defect: it escapes main()
        pytest.fail(f"{type(exc).__name__} escaped main(): {exc}")
    assert code == 2, (code, err)
    assert err.count("\n") == 1, err
    assert err.startswith("error: --api"), err


@pytest.mark.parametrize("token", ["s3cr3t\n", "s3cr3t value", "tökén"])
async def test_the_client_refuses_a_token_a_header_cannot_carry_without_showing_it(token: str) -> None:
    """The library's client checks its tokens when it is made: a ``ValueError`` that names
    the argument and the rule, never the value (sent, httpx's error quotes the header)."""
    for given in ({"token": token}, {"internal_token": token}):
        with pytest.raises(ValueError, match="not a bearer token") as caught:
            PipelineStateClient("http://127.0.0.1:1", **given)
        assert token.strip() not in str(caught.value)
