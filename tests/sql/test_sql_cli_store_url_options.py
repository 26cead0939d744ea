"""The operator CLI's ``--store``: a PostgreSQL URL with a connection option the driver does
not take (``?sslmode=require``, the libpq spelling most connection strings carry; asyncpg
spells it ``ssl``) or a value it cannot read (``?command_timeout=abc``) is a one-line usage
error. Was a defect (found by an attack on the operator commands): a traceback, exit 1."""

from __future__ import annotations

import pytest

from tests.cli_kit import Cli


@pytest.mark.parametrize(
    "query",
    ["sslmode=require", "command_timeout=abc"],
    ids=["libpq-sslmode", "unreadable-timeout"],
)
def test_a_store_url_option_the_driver_refuses_is_a_one_line_usage_error(
    capsys: pytest.CaptureFixture[str], query: str
) -> None:
    """docs/operations.md (operator commands): "errors are one line on standard error; the
    exit code says what happened: ... 2 bad usage or input"; session._open_store: "A URL or
    ``--schema`` the SQL adapter cannot use is a usage error (exit 2)". A URL whose query the
    driver refuses escapes ``main()`` (TypeError/ValueError from asyncpg's ``connect()``
    when the revision is checked): a 90-line traceback, and as a process exit 1, which the
    CLI documents as "refused by the engine"."""
    url = f"postgresql+asyncpg://app:S3cretPw@127.0.0.1:1/pipeline?{query}"
    cli = Cli(capsys, [])
    try:
        ran = cli("batch", "show", "b1", "--store", url, "--json")
    except BaseException as exc:  # the defect: it escapes main()
        pytest.fail(f"?{query}: {type(exc).__name__} escaped main(): {exc}")
    assert ran.err.count("\n") == 1, ran.err
    assert ran.code == 2, f"exit {ran.code}: {ran.err.strip()}"
    assert ran.out == ""
    assert "S3cretPw" not in ran.err
