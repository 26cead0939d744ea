"""HTTP adapter: an ASGI (FastAPI) router, a typed httpx client and a status page."""
