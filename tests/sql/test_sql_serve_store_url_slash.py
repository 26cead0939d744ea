"""A store password holding an unencoded ``@`` and then a ``/`` (base64-made passwords carry
both): the parser splits it into host and database, and no part of it is shown."""

from __future__ import annotations

from pathlib import Path

from tests.serve_process import assert_clean_failure, run_serve

HEAD, TAIL = "S3cretHead", "S3cretTail9"
URL = f"postgresql+asyncpg://app:hunter@{HEAD}/{TAIL}@127.0.0.1:5432/db"
"""The password is ``hunter@S3cretHead/S3cretTail9`` (its ``@`` and ``/`` not encoded)."""


def test_shown_url_keeps_no_part_of_a_password_holding_an_at_sign_and_a_slash() -> None:
    """Was a defect (found by a review of the first fix, which looked at the host only).

    Expected (stores.py ``shown_url``: "a password it holds is ``***``"; the fix's own
    test suggestion: when what follows the masked password still holds an ``@``, show the
    URL without its user part): no part of the password in the shown URL.

    Actual: SQLAlchemy splits at the first ``@`` and the first ``/``: password ``hunter``,
    host ``S3cretHead``, database ``S3cretTail9@127.0.0.1:5432/db``. ``shown_url``
    (adapters/pipeline_state_service/stores.py:62) only looks for an ``@`` in the host, so it
    shows ``postgresql+asyncpg://app:***@S3cretHead/S3cretTail9%40127.0.0.1:5432/db``.
    Fix: if any ``@`` is left in the raw URL after the first one (host *or* database), show
    the URL from its last ``@`` on, or the scheme only."""
    from pipeline_state_service.stores import shown_url

    shown = shown_url(URL)
    assert HEAD not in shown, shown
    assert TAIL not in shown, shown
    assert shown == "postgresql+asyncpg://..."


def test_serve_never_logs_part_of_a_password_holding_an_at_sign_and_a_slash(tmp_path: Path) -> None:
    """As above, through ``serve --store``: it fails to reach host ``S3cretHead`` and logs
    "cannot open the store postgresql+asyncpg://app:***@S3cretHead/S3cretTail9%40..."."""
    result = run_serve(tmp_path, "--store", URL, timeout=30)
    assert_clean_failure(result, (1, 2))
    out = result.stderr + result.stdout
    assert HEAD not in out, result.stderr[-1500:]
    assert TAIL not in out, result.stderr[-1500:]
