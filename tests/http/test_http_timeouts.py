"""Slow clients cannot hold the server: a request head or body that does not arrive in time
ends the connection (the server configuration of ``serve --http``, on a real socket)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import httpx
import pytest
from pipeline_state_http import HttpSettings

from .conftest import API_TOKEN, TOKENS
from .serving import served, wait_closed

HEADER_TIMEOUT, BODY_TIMEOUT = 1.0, 1.0
SLACK = 5.0
"""How long past its timeout a cut-off may come: the server runs in a thread of this process,
which a loaded machine deschedules (seen at 2.3 s for a 1 s timeout); a connection never
cut off would drip on for good."""


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    timeouts = {"header_timeout_seconds": HEADER_TIMEOUT, "body_timeout_seconds": BODY_TIMEOUT}
    settings = HttpSettings(**timeouts, **TOKENS)
    with served("memory", settings) as url:
        yield url


def _connect(base_url: str) -> socket.socket:
    host, port = httpx.URL(base_url).host, httpx.URL(base_url).port
    assert port is not None
    return socket.create_connection((host, port), timeout=5)


def _drip(conn: socket.socket, data: bytes, every: float, until: float) -> bool:
    """Send ``data`` a byte every ``every`` seconds for at most ``until`` seconds; whether the
    server closed the connection meanwhile."""
    deadline = time.monotonic() + until
    for byte in data:
        if time.monotonic() > deadline:
            return False
        try:
            conn.sendall(bytes([byte]))
        except OSError:
            return True
        time.sleep(every)
    return False


def _read_response(conn: socket.socket) -> bytes:
    """One whole answer (head and ``Content-Length`` body) from ``conn``."""
    received = b""
    while b"\r\n\r\n" not in received:
        received += conn.recv(4096)
    head, _, body = received.partition(b"\r\n\r\n")
    lengths = [
        line.split(b":", 1)[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
    ]
    length = int(lengths[0])
    while len(body) < length:
        body += conn.recv(4096)
    return received


def test_a_slowly_sent_request_head_is_cut_off(base_url: str) -> None:
    with _connect(base_url) as conn:
        started = time.monotonic()
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        _drip(conn, b"X-Slow: " + b"a" * 100, every=0.2, until=HEADER_TIMEOUT + 1.0)
        _, received = wait_closed(conn, within=HEADER_TIMEOUT + SLACK)
        elapsed = time.monotonic() - started
    assert elapsed < HEADER_TIMEOUT + SLACK
    assert received.startswith(b"HTTP/1.1 408 "), received


def test_an_idle_connection_without_a_request_is_closed(base_url: str) -> None:
    with _connect(base_url) as conn:
        elapsed, received = wait_closed(conn, within=HEADER_TIMEOUT + 6.0)  # keep-alive is 5 s
    assert elapsed < HEADER_TIMEOUT + 3.0  # well before the keep-alive's 5 s
    assert received == b""


def test_the_head_of_a_second_request_on_a_kept_alive_connection_is_timed_too(base_url: str) -> None:
    with _connect(base_url) as conn:
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        first = _read_response(conn)
        assert first.startswith(b"HTTP/1.1 200 "), first
        started = time.monotonic()
        conn.sendall(b"GET /healthz HTTP/1.1\r\n")
        _drip(conn, b"Host: " + b"x" * 100, every=0.2, until=HEADER_TIMEOUT + 1.0)
        _, received = wait_closed(conn, within=HEADER_TIMEOUT + SLACK)
    assert time.monotonic() - started < HEADER_TIMEOUT + SLACK
    assert received.startswith(b"HTTP/1.1 408 "), received


def test_a_slowly_sent_body_is_refused_with_408(base_url: str) -> None:
    body = b'{"batch_id": "slow", "expected_essay_count": 1, "user_id": "t", "course_code": "ENG5"}'
    head = (
        b"POST /v1/batches/register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + API_TOKEN.encode() + b"\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
    )
    with _connect(base_url) as conn:
        conn.sendall(head)
        started = time.monotonic()
        _drip(conn, body, every=0.2, until=BODY_TIMEOUT + 1.0)
        _, received = wait_closed(conn, within=BODY_TIMEOUT + SLACK)
    assert time.monotonic() - started < BODY_TIMEOUT + SLACK
    assert received.startswith(b"HTTP/1.1 408 "), received
    assert b"request_timeout" in received
    status = httpx.get(f"{base_url}/v1/batches/slow", headers={"Authorization": f"Bearer {API_TOKEN}"})
    assert status.status_code == 404  # nothing was registered


def test_a_slow_body_to_a_route_that_never_reads_it_is_cut_off(base_url: str) -> None:
    with _connect(base_url) as conn:
        conn.sendall(b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
        started = time.monotonic()
        closed = _drip(conn, b"x" * 1000, every=0.2, until=BODY_TIMEOUT + SLACK)
        if not closed:
            wait_closed(conn, within=BODY_TIMEOUT + SLACK)
    assert time.monotonic() - started < BODY_TIMEOUT + SLACK + 0.5


def test_prompt_clients_are_served(base_url: str) -> None:
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {API_TOKEN}"}) as http:
        for _ in range(3):
            assert http.get("/healthz").status_code == 200
            assert http.get("/v1/batches/none").status_code == 404
        time.sleep(HEADER_TIMEOUT / 2)
        assert http.get("/healthz").status_code == 200
