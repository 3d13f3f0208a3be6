"""An LLM chat completion for real through the whole loop: Gatehouse (live server, real PostgreSQL), the relay and
the demo upstream (no model: a fixed, labelled reply with deterministic token usage). The key is made through
Gatehouse's services; the usage API must show the upstream's exact token counts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import requests
from django.test import Client

from accounts.services import management_token_create
from analytics.aggregation import aggregate_pending
from endpoints.models import Service
from endpoints.services import api_key_create, endpoint_create, gateway_credential_create
from relay import demo_llm
from relay.tests.helpers import RunningRelay

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

MODEL = "llama-3.1-8b-instruct"


def test_a_chat_completion_is_metered_into_the_usage_api_with_exact_tokens(
    live_server: Any, team_a: Any, owner_a: Any, start_relay: Callable[..., RunningRelay], servers: Callable[..., str]
) -> None:
    endpoint = endpoint_create(team=team_a, name="LLM", services=[MODEL], actor=owner_a)
    key, secret = api_key_create(endpoint=endpoint, name="server", actor=owner_a)
    _credential, gateway_secret = gateway_credential_create(name="relay-llm-e2e")
    _token, token = management_token_create(team=team_a, name="usage", scopes=["read"], actor=owner_a)
    upstream = servers(demo_llm.create_app()) + "/v1"
    relay = start_relay(live_server.url, upstreams={MODEL: upstream}, gateway_secret=gateway_secret, feed_wait=1)
    auth = {"Authorization": f"Bearer {secret}"}
    messages = [{"role": "user", "content": "What is the block number, please?"}]  # 6 words

    first = requests.post(
        f"{relay.url}/{MODEL}/v1/{key.key_id}/chat/completions",
        json={"model": MODEL, "messages": messages},
        headers=auth,
        timeout=10,
    )
    # The catalog's own URL shape: https://llm.<domain>/v1/<key_id>/chat/completions, the model in the body.
    second = requests.post(
        f"{relay.url}/v1/{key.key_id}/chat/completions",
        json={"model": MODEL, "messages": [*messages, {"role": "user", "content": "And again"}]},
        headers=auth | {"Host": "llm.localhost"},
        timeout=10,
    )

    reply_words = len(demo_llm.REPLY.split())
    assert (first.status_code, second.status_code) == (200, 200)
    assert first.json()["usage"]["prompt_tokens"] == 6
    assert second.json()["usage"]["prompt_tokens"] == 8
    assert relay.flush()
    aggregate_pending()

    response = Client(HTTP_AUTHORIZATION=f"Bearer {token}").get(
        f"/api/v1/teams/{team_a.slug}/usage/summary", {"range": "1h"}
    )
    assert response.status_code == 200, response.content
    summary = response.json()
    assert {name: summary[name] for name in ("requests", "successes", "input_tokens", "output_tokens")} == {
        "requests": 2,
        "successes": 2,
        "input_tokens": 6 + 8,
        "output_tokens": 2 * reply_words,
    }
    # Units as billing counts them: tokens × the catalog's price per million (the feed publishes the prices).
    service = Service.objects.get(pk=MODEL)
    expected = (6 + 8) * service.input_price_per_million + 2 * reply_words * service.output_price_per_million
    assert summary["units"] == round(expected)
