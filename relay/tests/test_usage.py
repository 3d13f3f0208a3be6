"""Usage delivery: spool first, the same Idempotency-Key and bytes on every retry, permanent refusals set aside,
and a restart that finds the spool and delivers it."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from pathlib import Path

import requests

from relay.tests.anvil import free_port
from relay.tests.helpers import FakeGatehouse, RunningRelay
from relay.usage import SUFFIX, Spool, SpoolFile, batches

BLOCK_NUMBER = {"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber"}


def send(relay: RunningRelay, calls: int = 1) -> None:
    """`calls` calls in one batch request: their records reach the buffer together, so they make one usage batch."""
    batch = [BLOCK_NUMBER | {"id": n} for n in range(calls)]
    assert requests.post(relay.url + "/eth-mainnet/v1/key_one", json=batch, timeout=5).status_code == 200


def spooled(directory: Path) -> list[SpoolFile]:
    return Spool(directory).pending()


def test_batches_are_cut_by_records_and_by_bytes() -> None:
    lines = [b"x" * 10] * 5

    assert [len(batch) for batch in batches(lines, max_records=2)] == [2, 2, 1]
    assert [len(batch) for batch in batches(lines, max_records=100, max_bytes=25)] == [2, 2, 1]
    assert batches([], max_records=2) == []


def test_a_failed_push_is_retried_with_the_same_key_and_bytes_until_it_is_accepted(
    relay: RunningRelay, gatehouse: FakeGatehouse
) -> None:
    gatehouse.usage_answers = [503, 500, 429]
    send(relay, 3)

    delivered = relay.relay.metrics.counters
    relay.wait_for(lambda: delivered["relay_usage_batches_delivered_total"] == 1, "the batch, after three refusals", 15)

    (key,) = gatehouse.batches
    assert gatehouse.posts == [key] * 4
    assert [record["method"] for record in gatehouse.records()] == ["eth_blockNumber"] * 3
    assert relay.relay.metrics.counters["relay_usage_delivery_failures_total"] == 3
    assert relay.relay.metrics.counters["relay_usage_batches_delivered_total"] == 1
    assert spooled(relay.relay.settings.spool_dir) == []


def test_a_batch_gatehouse_refuses_for_good_is_set_aside_and_the_rest_flows(
    relay: RunningRelay, gatehouse: FakeGatehouse
) -> None:
    gatehouse.usage_answers = [422]
    send(relay)
    relay.wait_for(lambda: relay.relay.metrics.counters["relay_usage_batches_rejected_total"] == 1, "the refusal")
    send(relay)

    relay.wait_for(lambda: len(gatehouse.batches) == 1, "the next batch")
    rejected = list((relay.relay.settings.spool_dir / "rejected").iterdir())
    assert len(rejected) == 1
    assert json.loads(gzip.decompress(rejected[0].read_bytes()))["method"] == "eth_blockNumber"


def test_usage_survives_a_gatehouse_outage_and_a_restart_and_is_delivered_once(
    gatehouse: FakeGatehouse,
    node_url: str,
    servers: Callable[..., str],
    start_relay: Callable[..., RunningRelay],
    tmp_path: Path,
) -> None:
    spool = tmp_path / "spool"
    port = free_port()
    servers(gatehouse.app(), port)
    first = start_relay(f"http://127.0.0.1:{port}", upstreams={"eth-mainnet": node_url}, spool_dir=spool)
    gatehouse.usage_answers = [503] * 1000  # Gatehouse answers the feed, but ingestion is down
    send(first, 5)
    first.stop()  # SIGTERM's path: the buffer goes to the spool, delivery fails, the files stay

    (batch,) = spooled(spool)
    assert batch.records == 5
    attempts = gatehouse.posts.count(batch.idempotency_key)
    assert attempts >= 1

    gatehouse.usage_answers = []
    second = start_relay(f"http://127.0.0.1:{port}", upstreams={"eth-mainnet": node_url}, spool_dir=spool)
    usage = second.relay.usage
    assert usage is not None
    second.wait_for(lambda: usage.spooled_files == 0, "the spooled batch delivered after the restart")

    assert list(gatehouse.batches) == [batch.idempotency_key]
    assert len(gatehouse.records()) == 5
    assert spooled(spool) == []
    assert usage.spooled_records == 0


def test_a_batch_acknowledged_but_not_heard_is_replayed_not_counted_twice(
    gatehouse: FakeGatehouse, gatehouse_url: str, node_url: str, start_relay: Callable[..., RunningRelay]
) -> None:
    relay = start_relay(gatehouse_url, upstreams={"eth-mainnet": node_url}, flush_interval=30)  # flushed by hand
    send(relay, 2)
    usage = relay.relay.usage
    assert usage is not None
    relay.loop.run(usage.flush())
    (batch,) = spooled(relay.relay.settings.spool_dir)
    # Gatehouse committed it, but the answer never reached the relay (a cut connection): the file is still here.
    gatehouse.batches[batch.idempotency_key] = [{"committed": "earlier"}] * 2

    assert relay.flush()

    assert list(gatehouse.batches) == [batch.idempotency_key]
    assert gatehouse.records() == [{"committed": "earlier"}] * 2  # the replay changed nothing


def test_the_buffer_is_flushed_as_soon_as_it_holds_a_batch(
    gatehouse: FakeGatehouse, gatehouse_url: str, node_url: str, start_relay: Callable[..., RunningRelay]
) -> None:
    relay = start_relay(gatehouse_url, upstreams={"eth-mainnet": node_url}, flush_records=2, flush_interval=30)

    for _ in range(4):
        send(relay)

    relay.wait_for(lambda: len(gatehouse.records()) == 4, "two full batches without waiting for the interval")
    assert sorted(len(batch) for batch in gatehouse.batches.values()) == [2, 2]


def test_the_spool_holds_whole_files_only(tmp_path: Path) -> None:
    (tmp_path / ".tmp-relay-cut-short").write_bytes(b"\x1f\x8b half")
    (tmp_path / "notes.txt").write_text("not a batch")
    (tmp_path / f"junk{SUFFIX}").write_bytes(b"")

    spool = Spool(tmp_path)
    written = spool.write([b'{"id":"a"}', b'{"id":"b"}'])

    assert not (tmp_path / ".tmp-relay-cut-short").exists()
    assert spool.pending() == [written]
    assert written.records == 2
    assert written.idempotency_key.startswith("relay-")
    assert gzip.decompress(written.path.read_bytes()) == b'{"id":"a"}\n{"id":"b"}\n'
