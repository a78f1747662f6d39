"""The FastAPI app that tests/e2e/test_asgi_servers.py serves with uvicorn and gunicorn (real
worker processes): one endpoint per way a request can end, each recorded by the middleware."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.responses import StreamingResponse

from ai_analytics import client
from ai_analytics.integrations.asgi import AnalyticsMiddleware

app = FastAPI()
api = APIRouter()


@api.post("/embed/{name}")
async def embed(name: str, request: Request) -> dict:
    body = await request.json()
    event = client.current_event()
    assert event is not None
    event.model = body["model"]  # the model arrives in the body
    return {"name": name}


@api.get("/items/{item_id}")
def item(item_id: int) -> dict:  # sync: FastAPI's threadpool
    if item_id >= 1000:
        raise HTTPException(status_code=404)
    return {"id": item_id}


@api.get("/whoami")
async def whoami() -> dict:
    # The worker's pid as the model: the daemon's counts show which process served what.
    event = client.current_event()
    assert event is not None
    event.model = f"pid-{os.getpid()}"
    return {"pid": os.getpid()}


@api.get("/fail")
async def fail() -> dict:
    raise RuntimeError("the model crashed")


@api.get("/unavailable")
async def unavailable() -> dict:
    raise HTTPException(status_code=503)


@api.get("/stream/{model}")
async def stream(model: str) -> StreamingResponse:
    async def events() -> AsyncIterator[bytes]:
        for token in ("Hello", ",", " world"):
            yield f"data: {token}\n\n".encode()
            await asyncio.sleep(0.01)
        yield b"data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


app.include_router(api, prefix="/v1")
app.add_middleware(AnalyticsMiddleware, model="default-model")
