"""The usage fixture (team A endpoint, keys and a gateway client) lives in tests/fixtures.py, shared with billing."""

import pytest

from analytics import aggregation


def aggregate():
    aggregation.aggregate_pending()
    aggregation.compact_rollups()


@pytest.fixture
def known(usage, team_a):
    """A known set of relays in the last hour: 12 eth_call ok, 3 user errors, 2 upstream, 1 gateway on eth-mainnet
    (key 1) and 4 LLM completions (key 2)."""
    records = []
    for n in range(12):
        records.append(usage.record(n, latency_ms=10.0 + n, units=26))
    for n in range(3):
        records.append(
            usage.record(20 + n, status=429, error_class="user", latency_ms=1.0, units=0, method="eth_getBalance")
        )
    for n in range(2):
        records.append(
            usage.record(30 + n, status=502, error_class="upstream", latency_ms=3000.0, units=0, service="base")
        )
    records.append(usage.record(40, status=503, error_class="gateway", latency_ms=5.0, units=0, region="us-east-1"))
    llm = {"key": usage.llm_key, "service": "llama-3.1-8b-instruct", "method": "chat.completions", "units": 900}
    for n in range(4):
        records.append(usage.record(50 + n, latency_ms=800.0 + n, input_tokens=600, output_tokens=300, **llm))
    assert usage.post(records).status_code == 202
    aggregate()
    return records
