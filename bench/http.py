"""HTTP adapter benchmark: ``python bench/http.py [--quick]``.

Serves the API with uvicorn in a subprocess on loopback (in-memory store, seeded with
ready batches) and drives it with an httpx async client at bounded concurrency and a
bounded request count. Figures: requests/s and p50/p99 latency of ``GET /v1/batches/{id}``
and ``POST /v1/batches/{id}/pipelines`` (each request accepted on its own ready batch),
each against a bare FastAPI route returning a constant in the same server, measured in the
same run. Target: GET >= 0.3x the bare GET. The client and the server share the machine's
cores, so the absolute figures are lower bounds; the ratios are the point.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this folder is sys.path[0] and this file would shadow the stdlib `http`.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import argparse  # noqa: E402
import asyncio  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from collections.abc import Awaitable, Callable, Sequence  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import httpx  # noqa: E402
from pydantic import BaseModel  # noqa: E402

__all__ = ["Config", "Figure", "main"]

GET_TARGET = 0.3


@dataclass(frozen=True)
class Config:
    requests: int = 2000
    concurrency: int = 8
    warmup: int = 200

    @property
    def batches(self) -> int:
        """Ready batches to seed: one per accepted POST (warm-up included)."""
        return self.requests + self.warmup


QUICK = Config(requests=120, concurrency=4, warmup=20)


@dataclass(frozen=True)
class Figure:
    name: str
    count: int
    seconds: float
    latencies_ms: tuple[float, ...]
    failures: int

    @property
    def rps(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        if not ordered:
            return 0.0
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# --- the server (subprocess) -------------------------------------------------------------


class BareBody(BaseModel):
    """The bare POST route's body: parsed and validated like the real route's."""

    requested_pipeline: str
    user_id: str


def serve(fd: int, batches: int) -> None:
    """Seed ``batches`` ready batches and serve the API plus the bare routes on ``fd``."""
    import uvicorn
    from pipeline_state_http import HttpSettings, create_app

    from pipeline_state import InMemoryStore, ManualClock, PipelineService
    from pipeline_state.profiles.huleedu.testing.envelopes import HuleEduEnvelopes

    service = PipelineService(InMemoryStore(keep_transitions=False), clock=ManualClock())

    async def seed() -> None:
        env = HuleEduEnvelopes()
        for i in range(batches):
            batch_id = f"b{i}"
            await service.handle_message(*env.register(batch_id, items=5))
            await service.handle_message(*env.provisioned(batch_id, env.item_ids(batch_id, 5)))

    asyncio.run(seed())
    # Loopback only, and the bench measures the routes, not the token check: no tokens.
    app = create_app(service, settings=HttpSettings(insecure_no_auth=True))

    @app.get("/bench/bare")
    async def bare_get() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/bench/bare", status_code=202)
    async def bare_post(body: BareBody) -> dict[str, str]:
        return {"status": "accepted"}

    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    uvicorn.Server(config).run(sockets=[socket.socket(fileno=fd)])


# --- the client --------------------------------------------------------------------------

Call = Callable[[httpx.AsyncClient, int], Awaitable[httpx.Response]]


async def _measure(
    client: httpx.AsyncClient, name: str, call: Call, expect: int, first: int, count: int, concurrency: int
) -> Figure:
    latencies: list[float] = []
    failures = 0
    queue = iter(range(first, first + count))

    async def worker() -> None:
        nonlocal failures
        for i in queue:
            start = time.perf_counter()
            response = await call(client, i)
            latencies.append((time.perf_counter() - start) * 1000)
            if response.status_code != expect:
                failures += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Figure(name, count, time.perf_counter() - started, tuple(latencies), failures)


def _scenarios(batches: int) -> dict[str, tuple[Call, int]]:
    body = {"requested_pipeline": "nlp", "user_id": "teacher-1"}

    async def bare_get(c: httpx.AsyncClient, i: int) -> httpx.Response:
        return await c.get("/bench/bare")

    async def get_batch(c: httpx.AsyncClient, i: int) -> httpx.Response:
        return await c.get(f"/v1/batches/b{i % batches}")

    async def bare_post(c: httpx.AsyncClient, i: int) -> httpx.Response:
        return await c.post("/bench/bare", json=body)

    async def post_pipeline(c: httpx.AsyncClient, i: int) -> httpx.Response:
        return await c.post(f"/v1/batches/b{i}/pipelines", json=body)

    return {
        "bare GET": (bare_get, 200),
        "GET /v1/batches/{id}": (get_batch, 200),
        "bare POST": (bare_post, 202),
        "POST /v1/batches/{id}/pipelines": (post_pipeline, 202),
    }


async def _drive(base_url: str, config: Config) -> list[Figure]:
    limits = httpx.Limits(max_connections=config.concurrency, max_keepalive_connections=config.concurrency)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30.0) as client:
        deadline = time.monotonic() + 60
        while True:
            try:
                if (await client.get("/healthz")).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the benchmark server did not start within 60 s")
            await asyncio.sleep(0.1)
        figures = []
        for name, (call, expect) in _scenarios(config.batches).items():
            # The warm-up uses indexes [0, warmup), the measurement [warmup, warmup + requests):
            # every POST pipeline request lands on a batch of its own.
            await _measure(client, name, call, expect, 0, config.warmup, config.concurrency)
            figure = await _measure(
                client, name, call, expect, config.warmup, config.requests, config.concurrency
            )
            figures.append(figure)
            print(f"  measured {name}: {figure.rps:,.0f} req/s", file=sys.stderr, flush=True)
        return figures


def run(config: Config) -> list[Figure]:
    """Start the server subprocess, measure every scenario, stop the server."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    root = str(_HERE.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, str(Path(__file__).resolve()), "--serve", str(sock.fileno())]
    command += ["--batches", str(config.batches)]
    server = subprocess.Popen(command, pass_fds=(sock.fileno(),), env=env)
    try:
        return asyncio.run(_drive(f"http://127.0.0.1:{port}", config))
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
        sock.close()


def render(figures: Sequence[Figure]) -> tuple[str, bool]:
    """The table, and whether every target was met."""
    by_name = {f.name: f for f in figures}
    pairs = (
        ("GET /v1/batches/{id}", "bare GET", GET_TARGET),
        ("POST /v1/batches/{id}/pipelines", "bare POST", None),
    )
    header = f"{'figure':<34}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}{'ratio':>8}  target  result"
    lines = [header, "-" * len(header)]
    ok = True
    for name, base, target in pairs:
        for fig, is_base in ((by_name[base], True), (by_name[name], False)):
            ratio = "" if is_base else f"{fig.rps / by_name[base].rps:.2f}x"
            if is_base:
                verdict, shown = "baseline", ""
            elif target is None:
                verdict, shown = "info", ""
            else:
                met = fig.rps / by_name[base].rps >= target and fig.failures == 0
                ok = ok and met
                verdict, shown = ("PASS" if met else "MISS"), f">={target}x"
            lines.append(
                f"{fig.name:<34}{fig.rps:>9,.0f}{fig.pct(0.5):>9.2f}{fig.pct(0.99):>9.2f}"
                f"{fig.failures:>8}{ratio:>8}  {shown:<6}  {verdict}"
            )
    return "\n".join(lines), ok


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/http.py", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: shows it runs, figures meaningless")
    parser.add_argument("--requests", type=int, help="requests per scenario")
    parser.add_argument("--concurrency", type=int, help="requests in flight")
    parser.add_argument("--fail-on-miss", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--serve", type=int, metavar="FD", help=argparse.SUPPRESS)
    parser.add_argument("--batches", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve is not None:
        serve(args.serve, args.batches)
        return 0
    config = QUICK if args.quick else Config()
    if args.requests is not None or args.concurrency is not None:
        config = Config(
            requests=max(1, args.requests or config.requests),
            concurrency=max(1, args.concurrency or config.concurrency),
            warmup=config.warmup,
        )
    print(
        f"HTTP adapter benchmark - Python {sys.version.split()[0]}, {os.cpu_count()} cores, "
        f"{config.requests} requests per figure at concurrency {config.concurrency}"
        + (" - QUICK MODE, figures not meaningful" if args.quick else "")
    )
    started = time.perf_counter()
    figures = run(config)
    table, ok = render(figures)
    print(flush=True)
    print(table)
    print(
        f"\nratio = req/s over the bare route's req/s in the same server and run; "
        f"p50/p99 are per-request latencies seen by the client; measured in "
        f"{time.perf_counter() - started:.0f} s (median latency overall "
        f"{statistics.median(x for f in figures for x in f.latencies_ms):.2f} ms)",
        flush=True,
    )
    return 1 if args.fail_on_miss and not ok else 0


if __name__ == "__main__":
    raise SystemExit(main())
