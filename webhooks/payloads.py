"""What a delivery sends: the body for the endpoint's format, and the headers that go with it."""

from __future__ import annotations

import json
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder

from webhooks.models import EVENT_TYPES, WEBHOOK_TEST, WebhookEndpoint, WebhookEvent, WebhookFormat
from webhooks.signing import SIGNATURE_HEADER, signature_header

USER_AGENT = "Gatehouse-Webhooks/1"
SLACK_DETAIL_FIELDS = 6  # a Slack message lists at most this many of the payload's fields


def envelope(event: WebhookEvent) -> dict[str, Any]:
    """The Gatehouse JSON body: the same on every attempt (only the signature's timestamp changes)."""
    return {
        "id": event.event_id,
        "type": event.type,
        "created": event.created_at.isoformat(),
        "team": event.team.slug,
        "data": event.payload,
    }


def slack_text(event: WebhookEvent) -> str:
    """One message for a Slack (or Mattermost, Discord /slack, Teams workflow) incoming webhook: the payload's
    `summary` when the emitter wrote one, else its simple fields."""
    title = "Test event" if event.type == WEBHOOK_TEST else EVENT_TYPES.get(event.type, event.type)
    summary = event.payload.get("summary")
    if isinstance(summary, str) and summary:
        detail = summary
    else:
        simple = [(key, value) for key, value in event.payload.items() if isinstance(value, str | int | float)]
        detail = "\n".join(f"• {key}: {value}" for key, value in simple[:SLACK_DETAIL_FIELDS])
    return "\n".join(line for line in (f"*{title}* · {event.team.name} (`{event.type}`)", detail) if line)


def body_for(event: WebhookEvent, endpoint: WebhookEndpoint) -> bytes:
    document = {"text": slack_text(event)} if endpoint.format == WebhookFormat.SLACK else envelope(event)
    return json.dumps(document, cls=DjangoJSONEncoder, separators=(",", ":")).encode()


def headers_for(event: WebhookEvent, endpoint: WebhookEndpoint, body: bytes) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "Gatehouse-Event-Id": event.event_id,
        "Gatehouse-Event-Type": event.type,
        SIGNATURE_HEADER: signature_header(endpoint.signing_secrets(), body),
    }
