"""Found by an attack: HTTP-level hostile requests against the adapter's app (methods, unknown paths,
content types, charsets, duplicated keys, many headers)."""

from __future__ import annotations

import httpx

from .conftest import MakeReady


async def test_unrouted_path_and_wrong_method_answer_the_error_body(
    http: httpx.AsyncClient, make_ready: MakeReady
) -> None:
    """Was a defect (minor, contract shape): The README ("Denials and errors") says every error that
    is not a denial answers `{error, detail, field?, context?}`. An unknown path
    (`GET /v1/nope`, `GET /v1/batches/..%2F..%2Fetc`) and a wrong method on a known route
    (`PUT|DELETE|OPTIONS /v1/batches/{id}`, `GET /v1/batches/{id}/pipelines`) answer
    FastAPI's default `{"detail": "Not Found"}` / `{"detail": "Method Not Allowed"}`,
    without `error`: these answers come from the router, not from an `ApiRoute`, and
    `create_app` registers no exception handler for starlette's HTTPException (app.py)."""
    await make_ready("b1")
    for method, path in (
        ("GET", "/v1/nope"),
        ("GET", "/v1/batches/..%2F..%2Fetc"),
        ("PUT", "/v1/batches/b1"),
        ("DELETE", "/v1/batches/b1"),
        ("OPTIONS", "/v1/batches/b1/pipelines"),
        ("GET", "/v1/batches/b1/pipelines"),
    ):
        answer = await http.request(method, path)
        assert answer.status_code in (404, 405), (method, path, answer.status_code)
        assert answer.headers["content-type"].startswith("application/json")
        assert "error" in answer.json(), (method, path, answer.text)


async def test_body_tricks(http: httpx.AsyncClient, make_ready: MakeReady) -> None:
    """Held: wrong content types, UTF-16 and BOM bodies, duplicated JSON keys, JSON that is
    not an object, NaN/1e999 in prompt_payload, lone surrogates, very deep nesting and 3000
    extra headers each answer a documented 4xx with a JSON body (or are accepted as the
    JSON they are), never a 5xx; duplicated keys take the last value."""
    await make_ready("b1")
    await make_ready("b2")
    body = b'{"requested_pipeline":"nlp","user_id":"t"}'
    cases: list[tuple[str | None, bytes]] = [
        ("text/plain", body),
        ("application/x-www-form-urlencoded", b"requested_pipeline=nlp&user_id=t"),
        ("multipart/form-data; boundary=x", b"--x\r\n"),
        ("application/json", b"[]"),
        ("application/json", b"null"),
        ("application/json", b"\xff\xfe"),
        ("application/json", b""),
        ("application/json", b'{"requested_pipeline":"nlp","user_id":"t","prompt_payload":{"a":NaN}}'),
        ("application/json", b'{"requested_pipeline":"nlp","user_id":"t","prompt_payload":{"a":1e999}}'),
        ("application/json", b'{"requested_pipeline":"nlp","user_id":"t","prompt_payload":{"a":"\\ud800"}}'),
        (
            "application/json",
            b'{"requested_pipeline":"nlp","user_id":"t","prompt_payload":' + b"[" * 5000 + b"]" * 5000 + b"}",
        ),
        ("application/json", b'{"requested_pipeline":"nlp","user_id":"t","batch_id":"b1","batch_id":"zz"}'),
    ]
    for content_type, raw in cases:
        headers = {} if content_type is None else {"Content-Type": content_type}
        answer = await http.post("/v1/batches/b1/pipelines", content=raw, headers=headers)
        assert 400 <= answer.status_code < 500, (content_type, raw[:40], answer.text)
        assert answer.headers["content-type"].startswith("application/json")
    # A declared charset the body does not use is ignored (JSON is read as UTF-8/16/32).
    charset = await http.post(
        "/v1/batches/b1/pipelines", content=body, headers={"Content-Type": "application/json; charset=utf-16"}
    )
    assert charset.status_code == 202, charset.text
    dup = await http.post(
        "/v1/batches/b2/pipelines",
        content=b'{"requested_pipeline":"nope","requested_pipeline":"nlp","user_id":"t"}',
        headers={"Content-Type": "application/json", **{f"X-H{i}": "v" for i in range(3000)}},
    )
    assert dup.status_code == 202, dup.text
    assert dup.json()["resolved_pipeline"] == ["spellcheck", "nlp"]
