"""What ``serve`` prints about a store URL that holds a password or an option the driver
refuses."""

from __future__ import annotations

from pathlib import Path

from tests.serve_process import assert_clean_failure, run_serve

SECRET_TAIL = "S3cretTail9"


def test_a_password_holding_an_at_sign_is_never_shown_in_part(tmp_path: Path) -> None:
    """Was a defect (found by an attack on access control).

    Expected: ``serve`` never prints any part of the store URL's password (stores.py
    ``shown_url``: "a password it holds is ``***``"). A password with an unencoded ``@``
    (``postgresql+asyncpg://app:hunter@S3cretTail9@127.0.0.1:5432/db``, a common slip: the
    ``@`` should be ``%40``) is split by SQLAlchemy's URL parser at its first ``@``: only
    ``hunter`` is taken for the password and ``S3cretTail9@127.0.0.1`` for the host. Actual:
    ``shown_url`` (pipeline_state_service/stores.py:54) masks only the parsed password, and
    ``serve`` logs "cannot open the store postgresql+asyncpg://app:***@S3cretTail9@127.0.0.1:
    5432/db: ...", the rest of the password in clear. Fix: when what follows the masked
    password still holds an ``@`` (a host cannot), show the URL without its user part."""
    url = f"postgresql+asyncpg://app:hunter@{SECRET_TAIL}@127.0.0.1:5432/db"
    result = run_serve(tmp_path, "--store", url, timeout=30)
    assert_clean_failure(result, (1, 2))
    assert SECRET_TAIL not in result.stderr + result.stdout, result.stderr[-1500:]


def test_a_store_url_option_the_driver_refuses_is_one_line_from_serve(tmp_path: Path) -> None:
    """Was a defect (found by an attack on access control).

    Expected: ``serve --store`` with a PostgreSQL URL whose query the driver cannot read
    (``?timeout=abc``) stops with one line and a usage status, as the operator commands do
    since the fix of tests/sql/test_sql_cli_store_url_options.py (session._open_store turns
    the driver's ``TypeError``/``ValueError`` into "the store URL ... has an option the
    driver refuses"). Actual: ``serve`` (pipeline_state_service/serve.py:94, which catches
    only ``PipelineStateError``) lets asyncpg's ``TypeError: unsupported operand type(s) for
    +: 'float' and 'str'`` escape as a 130-line traceback, status 1."""
    url = "postgresql+asyncpg://app:S3cretPw@127.0.0.1:5432/db?timeout=abc"
    result = run_serve(tmp_path, "--store", url, timeout=30)
    assert_clean_failure(result, (1, 2))
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr[-1500:]
    assert "S3cretPw" not in result.stderr


def test_shown_url_keeps_no_part_of_a_password_split_at_an_unencoded_at_sign() -> None:
    """The masking itself: from the last ``@`` on, with the query's secrets masked too."""
    from pipeline_state_service.stores import shown_url

    shown = shown_url(f"postgresql+asyncpg://app:hunter@{SECRET_TAIL}@db.example:5432/app?password=x@y")
    assert SECRET_TAIL not in shown
    assert "hunter" not in shown
    assert "x@y" not in shown
    assert shown == "postgresql+asyncpg://app:***@db.example:5432/app?password=%2A%2A%2A", shown
