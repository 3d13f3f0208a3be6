"""A demo OpenAI-compatible upstream for the relay's LLM services — no model here.

`python -m relay.demo_llm --port 8600` serves `POST /v1/chat/completions` (and `/v1/embeddings`) and `GET /healthz`.
Every chat completion answers the same, clearly labelled message; `usage` is deterministic so metering can be
checked exactly: prompt tokens = the words (whitespace-separated) of the messages' text, completion tokens = the
words of the reply. The request's `model` is echoed. Point the relay at it with
`RELAY_UPSTREAMS='{"llama-3.1-8b-instruct": "http://127.0.0.1:8600/v1"}'` (or `{"llm": …}` for every model).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from typing import Any

from aiohttp import web

REPLY = "Demo upstream: no model here — this reply only exercises metering."
EMBEDDING_DIMENSIONS = 8


def words(value: Any) -> int:
    """Words of a message's content: a string, or OpenAI's list of parts ({"type": "text", "text": …})."""
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, list):
        return sum(words(part.get("text") if isinstance(part, dict) else part) for part in value)
    return 0


def prompt_tokens(messages: Any) -> int:
    if not isinstance(messages, list):
        return 0
    return sum(words(message.get("content")) for message in messages if isinstance(message, dict))


def _error(status: int, message: str, code: str) -> web.Response:
    body = {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}}
    return web.json_response(body, status=status)


async def _body(request: web.Request) -> dict[str, Any] | None:
    try:
        payload = await request.json()
    except ValueError:
        return None
    return payload if isinstance(payload, dict) else None


async def chat_completions(request: web.Request) -> web.Response:
    payload = await _body(request)
    if payload is None:
        return _error(400, "The body must be a JSON object.", "invalid_request")
    if not isinstance(payload.get("messages"), list):
        return _error(400, "`messages` must be a list.", "invalid_request")
    if payload.get("stream") is True:
        return _error(400, "The demo upstream does not stream.", "streaming_not_supported")
    prompt, completion = prompt_tokens(payload["messages"]), words(REPLY)
    digest = hashlib.sha256(await request.read()).hexdigest()[:24]
    return web.json_response(
        {
            "id": f"chatcmpl-demo-{digest}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": payload.get("model", "demo"),
            "system_fingerprint": "gatehouse-demo-upstream",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": REPLY}, "finish_reason": "stop"},
            ],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
        }
    )


async def embeddings(request: web.Request) -> web.Response:
    payload = await _body(request)
    if payload is None or "input" not in payload:
        return _error(400, "The body must be a JSON object with `input`.", "invalid_request")
    inputs = payload["input"] if isinstance(payload["input"], list) else [payload["input"]]
    data = []
    for index, text in enumerate(inputs):
        digest = hashlib.sha256(str(text).encode()).digest()
        vector = [round(byte / 255, 4) for byte in digest[:EMBEDDING_DIMENSIONS]]  # not an embedding: a hash
        data.append({"object": "embedding", "index": index, "embedding": vector})
    tokens = sum(words(text) for text in inputs)
    return web.json_response(
        {
            "object": "list",
            "data": data,
            "model": payload.get("model", "demo"),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )


async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "upstream": "demo", "model": None})


def create_app() -> web.Application:
    app = web.Application()
    for prefix in ("/v1", ""):
        app.router.add_post(f"{prefix}/chat/completions", chat_completions)
        app.router.add_post(f"{prefix}/embeddings", embeddings)
    app.router.add_get("/healthz", healthz)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m relay.demo_llm", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8600)
    args = parser.parse_args(argv)
    sys.stdout.write(f"demo LLM upstream (no model) on http://{args.host}:{args.port}/v1\n")
    sys.stdout.flush()
    web.run_app(create_app(), host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
