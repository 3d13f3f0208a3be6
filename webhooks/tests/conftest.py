"""Webhook test fixtures: the broker replaced by a list (tasks are then run by calling them), and endpoints."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from webhooks import services, tasks


@dataclass
class Queue:
    """What would have gone to the broker: ids queued with .delay, and (id, countdown) scheduled with apply_async."""

    delayed: list[int] = field(default_factory=list)
    scheduled: list[tuple[int, int]] = field(default_factory=list)

    def countdowns(self) -> list[int]:
        return [countdown for _id, countdown in self.scheduled]


@pytest.fixture
def queue(monkeypatch) -> Queue:
    queued = Queue()

    def apply_async(args, countdown=None, **_options):
        queued.scheduled.append((args[0], countdown))

    monkeypatch.setattr(tasks.deliver, "delay", queued.delayed.append)
    monkeypatch.setattr(tasks.deliver, "apply_async", apply_async)
    return queued


@pytest.fixture
def make_endpoint(team_a, owner_a):
    """make_endpoint(url, **fields) → (endpoint, secret) of team A, through the service."""

    def make(url: str, **fields):
        fields.setdefault("event_types", [])
        return services.webhook_endpoint_create(team=team_a, url=url, actor=owner_a, **fields)

    return make
