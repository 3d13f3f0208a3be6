"""Fixtures for usage tests: a team A endpoint and key, a gateway client, record builders."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.test import Client

from endpoints.models import ApiKey, Endpoint
from endpoints.services import api_key_create, endpoint_create, gateway_credential_create


@dataclass
class UsageEnv:
    endpoint: Endpoint
    key: ApiKey
    llm_key: ApiKey
    gateway: Client
    now: datetime

    def record(self, n: int = 0, *, key: ApiKey | None = None, **overrides: Any) -> dict[str, Any]:
        key = key or self.key
        record = {
            "id": f"relay-{uuid.uuid4().hex[:16]}-{n}",
            "ts": (self.now - timedelta(seconds=n % 50)).isoformat().replace("+00:00", "Z"),
            "key_id": key.key_id,
            "endpoint_id": key.endpoint.public_id,
            "service": "eth-mainnet",
            "method": "eth_call",
            "status": 200,
            "error_class": None,
            "latency_ms": 20.0 + n % 7,
            "req_bytes": 300,
            "resp_bytes": 900,
            "units": 26,
            "region": "eu-west-1",
        }
        record.update(overrides)
        return record

    def post(self, records: list[dict[str, Any]] | bytes, *, key: str | None = None, **headers: str) -> Any:
        body = records if isinstance(records, bytes) else "\n".join(json.dumps(r) for r in records).encode()
        return self.gateway.post(
            "/api/gateway/v1/usage",
            body,
            content_type="application/x-ndjson",
            HTTP_IDEMPOTENCY_KEY=key or uuid.uuid4().hex,
            **headers,
        )


@pytest.fixture
def usage(team_a, owner_a) -> UsageEnv:
    endpoint = endpoint_create(
        team=team_a, name="Wallet", services=["eth-mainnet", "base", "llama-3.1-8b-instruct"], actor=owner_a
    )
    key, _ = api_key_create(endpoint=endpoint, name="server", actor=owner_a)
    llm_key, _ = api_key_create(endpoint=endpoint, name="assistant", actor=owner_a)
    _credential, secret = gateway_credential_create(name="eu-west-1")
    now = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    return UsageEnv(endpoint, key, llm_key, Client(HTTP_AUTHORIZATION=f"Bearer {secret}"), now)
