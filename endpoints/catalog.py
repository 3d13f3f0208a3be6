"""Service catalog of the gateway: every blockchain RPC network and LLM model we sell, as plain data.

Nothing here imports Django, so the module is safe to import from data migrations, billing jobs, the traffic
simulator and tests alike.

Tables
------
``SERVICES``
    One ``ServiceSpec`` per sellable service. A data migration seeds the services table from it; ``id`` is the
    stable slug used in URLs, API keys' allowlists and usage records, so an id is never reused or renamed (a
    service that is no longer sold keeps its row with ``status="retired"``). RPC entries carry the default
    compute units (CU) charged per relay plus per-method overrides, in the spirit of Alchemy's CU table; LLM
    entries are billed by tokens instead, so they carry ``compute_units=1``, no overrides, and USD prices per
    million input / output tokens.

``KNOWN_METHODS``
    Per chain family (``"evm"``, ``"solana"``, ``"llm"``), every method name a customer may put on a per-service
    method allowlist. Allowlist validation rejects any name not listed here for the service's family. For LLMs
    the "methods" are the OpenAI-compatible operations.

``METHOD_WEIGHTS``
    Per chain family, the share of relays each method gets in a realistic traffic mix (weights sum to 1.0).
    The traffic simulator samples methods from it; every name is in ``KNOWN_METHODS`` for that family.

``service_ids()``
    The service ids in display order (``sort_order``): RPC mainnets, then testnets, then LLM models.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TypedDict


class ServiceSpec(TypedDict):
    id: str  # slug, e.g. "eth-mainnet"
    name: str  # display name, e.g. "Ethereum Mainnet"
    kind: str  # "rpc" or "llm"
    status: str  # "active", "beta" or "retired"
    chain_family: str  # "evm" or "solana" for rpc; "llm" for llm
    chain_id: int | None  # EVM chain id (1 for Ethereum mainnet ...), None otherwise
    url_template: str  # customer-facing URL, with the placeholder {key_id}
    compute_units: int  # default compute units per relay (rpc); 1 for llm (billed by tokens)
    method_compute_units: dict[str, int]  # per-method overrides (rpc); {} for llm
    input_price_per_million: Decimal | None  # USD per million input tokens (llm), None for rpc
    output_price_per_million: Decimal | None  # USD per million output tokens (llm), None for rpc
    context_window: int | None  # tokens (llm), None for rpc
    sort_order: int


GATEWAY_DOMAIN = "gw.gatehouse.dev"


# ---------------------------------------------------------------------------------------------------------------
# Methods a customer may allowlist, per chain family
# ---------------------------------------------------------------------------------------------------------------

KNOWN_METHODS: dict[str, tuple[str, ...]] = {
    "evm": (
        # Node and network information
        "web3_clientVersion",
        "web3_sha3",
        "net_version",
        "net_listening",
        "net_peerCount",
        "eth_chainId",
        "eth_syncing",
        "eth_protocolVersion",
        "eth_accounts",
        # Chain head and fees
        "eth_blockNumber",
        "eth_gasPrice",
        "eth_maxPriorityFeePerGas",
        "eth_feeHistory",
        "eth_blobBaseFee",
        # Account state
        "eth_getBalance",
        "eth_getCode",
        "eth_getStorageAt",
        "eth_getTransactionCount",
        "eth_getProof",
        # Execution
        "eth_call",
        "eth_estimateGas",
        "eth_createAccessList",
        "eth_sendRawTransaction",
        # Blocks
        "eth_getBlockByNumber",
        "eth_getBlockByHash",
        "eth_getBlockReceipts",
        "eth_getBlockTransactionCountByNumber",
        "eth_getBlockTransactionCountByHash",
        "eth_getUncleCountByBlockNumber",
        "eth_getUncleCountByBlockHash",
        "eth_getUncleByBlockNumberAndIndex",
        "eth_getUncleByBlockHashAndIndex",
        # Transactions
        "eth_getTransactionByHash",
        "eth_getTransactionByBlockNumberAndIndex",
        "eth_getTransactionByBlockHashAndIndex",
        "eth_getTransactionReceipt",
        # Logs and filters
        "eth_getLogs",
        "eth_newFilter",
        "eth_newBlockFilter",
        "eth_newPendingTransactionFilter",
        "eth_getFilterChanges",
        "eth_getFilterLogs",
        "eth_uninstallFilter",
        # Subscriptions, over WebSocket
        "eth_subscribe",
        "eth_unsubscribe",
        # Debug API (Geth-style tracing)
        "debug_traceTransaction",
        "debug_traceCall",
        "debug_traceBlockByNumber",
        "debug_traceBlockByHash",
        # Trace API (Parity / Erigon-style)
        "trace_block",
        "trace_transaction",
        "trace_call",
        "trace_filter",
        "trace_get",
        "trace_replayTransaction",
        "trace_replayBlockTransactions",
    ),
    "solana": (
        # Accounts
        "getAccountInfo",
        "getBalance",
        "getMultipleAccounts",
        "getProgramAccounts",
        "getLargestAccounts",
        "getMinimumBalanceForRentExemption",
        # SPL tokens
        "getTokenAccountBalance",
        "getTokenAccountsByOwner",
        "getTokenAccountsByDelegate",
        "getTokenLargestAccounts",
        "getTokenSupply",
        # Blocks and slots
        "getBlock",
        "getBlockHeight",
        "getBlockTime",
        "getBlocks",
        "getBlocksWithLimit",
        "getBlockProduction",
        "getBlockCommitment",
        "getFirstAvailableBlock",
        "getSlot",
        "getSlotLeader",
        "getSlotLeaders",
        "minimumLedgerSlot",
        "getHighestSnapshotSlot",
        # Blockhashes and fees
        "getLatestBlockhash",
        "isBlockhashValid",
        "getFeeForMessage",
        "getRecentPrioritizationFees",
        # Transactions
        "getTransaction",
        "getTransactionCount",
        "getSignaturesForAddress",
        "getSignatureStatuses",
        "sendTransaction",
        "simulateTransaction",
        # Cluster, epoch and staking
        "getHealth",
        "getVersion",
        "getIdentity",
        "getGenesisHash",
        "getClusterNodes",
        "getEpochInfo",
        "getEpochSchedule",
        "getLeaderSchedule",
        "getVoteAccounts",
        "getSupply",
        "getInflationRate",
        "getInflationReward",
        "getInflationGovernor",
        "getRecentPerformanceSamples",
        "getStakeMinimumDelegation",
    ),
    "llm": (
        "chat.completions",
        "completions",
        "embeddings",
    ),
}


# ---------------------------------------------------------------------------------------------------------------
# Compute units per relay (RPC). Anything not overridden costs the service's default ``compute_units``.
# ---------------------------------------------------------------------------------------------------------------

_EVM_DEFAULT_CU = 10

_EVM_METHOD_CU: dict[str, int] = {
    # Free: answered from node metadata, no state access
    "eth_chainId": 0,
    "net_version": 0,
    "net_listening": 0,
    "eth_syncing": 0,
    "eth_protocolVersion": 0,
    "eth_accounts": 10,
    "web3_clientVersion": 15,
    "web3_sha3": 26,
    "net_peerCount": 10,
    # Chain head and fees
    "eth_blockNumber": 10,
    "eth_gasPrice": 19,
    "eth_maxPriorityFeePerGas": 10,
    "eth_feeHistory": 10,
    "eth_blobBaseFee": 10,
    # Account state
    "eth_getBalance": 19,
    "eth_getCode": 19,
    "eth_getStorageAt": 17,
    "eth_getTransactionCount": 26,
    "eth_getProof": 21,
    # Execution
    "eth_call": 26,
    "eth_estimateGas": 87,
    "eth_createAccessList": 87,
    "eth_sendRawTransaction": 250,
    # Blocks
    "eth_getBlockByNumber": 16,
    "eth_getBlockByHash": 16,
    "eth_getBlockReceipts": 500,
    "eth_getBlockTransactionCountByNumber": 20,
    "eth_getBlockTransactionCountByHash": 20,
    "eth_getUncleCountByBlockNumber": 15,
    "eth_getUncleCountByBlockHash": 15,
    "eth_getUncleByBlockNumberAndIndex": 15,
    "eth_getUncleByBlockHashAndIndex": 15,
    # Transactions
    "eth_getTransactionByHash": 17,
    "eth_getTransactionByBlockNumberAndIndex": 15,
    "eth_getTransactionByBlockHashAndIndex": 15,
    "eth_getTransactionReceipt": 15,
    # Logs and filters
    "eth_getLogs": 75,
    "eth_newFilter": 20,
    "eth_newBlockFilter": 20,
    "eth_newPendingTransactionFilter": 20,
    "eth_getFilterChanges": 20,
    "eth_getFilterLogs": 75,
    "eth_uninstallFilter": 10,
    # Subscriptions: the subscribe call itself; pushed events are metered separately
    "eth_subscribe": 10,
    "eth_unsubscribe": 10,
    # Debug API
    "debug_traceTransaction": 309,
    "debug_traceCall": 309,
    "debug_traceBlockByNumber": 497,
    "debug_traceBlockByHash": 497,
    # Trace API
    "trace_block": 500,
    "trace_transaction": 26,
    "trace_call": 75,
    "trace_filter": 75,
    "trace_get": 17,
    "trace_replayTransaction": 2983,
    "trace_replayBlockTransactions": 2983,
}

_SOLANA_DEFAULT_CU = 10

_SOLANA_METHOD_CU: dict[str, int] = {
    # Free / near-free node metadata
    "getHealth": 0,
    "getVersion": 0,
    "getIdentity": 0,
    "getGenesisHash": 0,
    # Cheap head reads
    "getSlot": 5,
    "getBlockHeight": 5,
    "getLatestBlockhash": 10,
    "isBlockhashValid": 10,
    "getRecentPrioritizationFees": 15,
    # Account reads
    "getAccountInfo": 10,
    "getBalance": 10,
    "getMultipleAccounts": 20,
    "getTokenAccountBalance": 15,
    "getTokenAccountsByOwner": 60,
    "getTokenAccountsByDelegate": 60,
    "getTokenLargestAccounts": 100,
    "getTokenSupply": 15,
    # Scans over the whole account index are the expensive ones
    "getProgramAccounts": 500,
    "getLargestAccounts": 500,
    "getSupply": 100,
    # Blocks and history
    "getBlock": 100,
    "getBlocks": 40,
    "getBlocksWithLimit": 40,
    "getBlockProduction": 40,
    "getTransaction": 40,
    "getSignaturesForAddress": 40,
    "getSignatureStatuses": 20,
    "getInflationReward": 100,
    # Writes and simulation
    "sendTransaction": 250,
    "simulateTransaction": 100,
    # Cluster-wide reports
    "getClusterNodes": 50,
    "getLeaderSchedule": 100,
    "getVoteAccounts": 100,
    "getRecentPerformanceSamples": 20,
}


# ---------------------------------------------------------------------------------------------------------------
# Realistic traffic mix per family (weights sum to 1.0)
# ---------------------------------------------------------------------------------------------------------------

METHOD_WEIGHTS: dict[str, dict[str, float]] = {
    "evm": {
        "eth_call": 0.31,
        "eth_blockNumber": 0.14,
        "eth_getBalance": 0.09,
        "eth_getLogs": 0.09,
        "eth_getTransactionReceipt": 0.08,
        "eth_getBlockByNumber": 0.08,
        "eth_chainId": 0.07,
        "eth_getTransactionCount": 0.025,
        "eth_getCode": 0.02,
        "eth_estimateGas": 0.02,
        "eth_gasPrice": 0.015,
        "eth_getTransactionByHash": 0.015,
        "eth_feeHistory": 0.01,
        "eth_sendRawTransaction": 0.01,
        "net_version": 0.01,
        "eth_maxPriorityFeePerGas": 0.005,
        "eth_getStorageAt": 0.005,
        "eth_getBlockReceipts": 0.002,
        "debug_traceTransaction": 0.002,
        "trace_block": 0.001,
    },
    "solana": {
        "getAccountInfo": 0.22,
        "getLatestBlockhash": 0.14,
        "getSlot": 0.10,
        "getBalance": 0.10,
        "getTransaction": 0.08,
        "getMultipleAccounts": 0.07,
        "getSignaturesForAddress": 0.06,
        "getTokenAccountsByOwner": 0.05,
        "getSignatureStatuses": 0.05,
        "sendTransaction": 0.03,
        "simulateTransaction": 0.02,
        "getBlockHeight": 0.02,
        "getRecentPrioritizationFees": 0.02,
        "getProgramAccounts": 0.01,
        "getBlock": 0.01,
        "getTokenAccountBalance": 0.01,
        "getEpochInfo": 0.005,
        "getHealth": 0.005,
    },
    "llm": {
        "chat.completions": 0.85,
        "embeddings": 0.12,
        "completions": 0.03,
    },
}


# ---------------------------------------------------------------------------------------------------------------
# Services
# ---------------------------------------------------------------------------------------------------------------


def _rpc(
    sid: str, name: str, *, chain_family: str, chain_id: int | None, sort_order: int, status: str = "active"
) -> ServiceSpec:
    """An RPC service; each gets its own copy of its family's CU override table."""
    if chain_family == "evm":
        default_cu, overrides = _EVM_DEFAULT_CU, _EVM_METHOD_CU
    else:
        default_cu, overrides = _SOLANA_DEFAULT_CU, _SOLANA_METHOD_CU
    return {
        "id": sid,
        "name": name,
        "kind": "rpc",
        "status": status,
        "chain_family": chain_family,
        "chain_id": chain_id,
        "url_template": f"https://{sid}.{GATEWAY_DOMAIN}/v1/{{key_id}}",
        "compute_units": default_cu,
        "method_compute_units": dict(overrides),
        "input_price_per_million": None,
        "output_price_per_million": None,
        "context_window": None,
        "sort_order": sort_order,
    }


def _llm(
    sid: str,
    name: str,
    *,
    input_price: str,
    output_price: str,
    context_window: int,
    sort_order: int,
    status: str = "active",
) -> ServiceSpec:
    """An LLM model, billed by tokens at the given USD prices per million tokens."""
    return {
        "id": sid,
        "name": name,
        "kind": "llm",
        "status": status,
        "chain_family": "llm",
        "chain_id": None,
        "url_template": f"https://llm.{GATEWAY_DOMAIN}/v1/{{key_id}}/chat/completions",
        "compute_units": 1,
        "method_compute_units": {},
        "input_price_per_million": Decimal(input_price),
        "output_price_per_million": Decimal(output_price),
        "context_window": context_window,
        "sort_order": sort_order,
    }


SERVICES: list[ServiceSpec] = [
    # RPC mainnets, by traffic
    _rpc("eth-mainnet", "Ethereum Mainnet", chain_family="evm", chain_id=1, sort_order=10),
    _rpc("base", "Base", chain_family="evm", chain_id=8453, sort_order=20),
    _rpc("arbitrum", "Arbitrum One", chain_family="evm", chain_id=42161, sort_order=30),
    _rpc("optimism", "OP Mainnet (Optimism)", chain_family="evm", chain_id=10, sort_order=40),
    _rpc("polygon", "Polygon PoS", chain_family="evm", chain_id=137, sort_order=50),
    _rpc("bsc", "BNB Smart Chain", chain_family="evm", chain_id=56, sort_order=60),
    _rpc("avalanche", "Avalanche C-Chain", chain_family="evm", chain_id=43114, sort_order=70),
    _rpc("gnosis", "Gnosis Chain", chain_family="evm", chain_id=100, sort_order=80),
    _rpc("solana", "Solana Mainnet", chain_family="solana", chain_id=None, sort_order=90),
    # RPC testnets
    _rpc("sepolia", "Ethereum Sepolia (testnet)", chain_family="evm", chain_id=11155111, sort_order=110),
    _rpc("base-sepolia", "Base Sepolia (testnet)", chain_family="evm", chain_id=84532, sort_order=120),
    _rpc("hoodi", "Ethereum Hoodi (testnet)", chain_family="evm", chain_id=560048, sort_order=130, status="beta"),
    _rpc(
        "holesky",
        "Ethereum Holesky (testnet)",
        chain_family="evm",
        chain_id=17000,
        sort_order=140,
        status="retired",
    ),
    # LLM models (open weights), small to large within each family
    _llm(
        "llama-3.1-8b-instruct",
        "Llama 3.1 8B Instruct",
        input_price="0.05",
        output_price="0.08",
        context_window=131072,
        sort_order=210,
    ),
    _llm(
        "llama-3.1-70b-instruct",
        "Llama 3.1 70B Instruct",
        input_price="0.40",
        output_price="0.40",
        context_window=131072,
        sort_order=220,
    ),
    _llm(
        "llama-3.3-70b-instruct",
        "Llama 3.3 70B Instruct",
        input_price="0.23",
        output_price="0.40",
        context_window=131072,
        sort_order=230,
    ),
    _llm(
        "mistral-7b-instruct",
        "Mistral 7B Instruct",
        input_price="0.05",
        output_price="0.05",
        context_window=32768,
        sort_order=240,
    ),
    _llm(
        "mixtral-8x7b-instruct",
        "Mixtral 8x7B Instruct",
        input_price="0.24",
        output_price="0.24",
        context_window=32768,
        sort_order=250,
    ),
    _llm(
        "qwen-2.5-72b-instruct",
        "Qwen 2.5 72B Instruct",
        input_price="0.35",
        output_price="0.40",
        context_window=32768,
        sort_order=260,
    ),
    _llm(
        "deepseek-v3",
        "DeepSeek V3",
        input_price="0.27",
        output_price="1.10",
        context_window=131072,
        sort_order=270,
    ),
    _llm(
        "deepseek-r1",
        "DeepSeek R1",
        input_price="0.55",
        output_price="2.19",
        context_window=131072,
        sort_order=280,
        status="beta",
    ),
    _llm(
        "deepseek-r1-distill-llama-70b",
        "DeepSeek R1 Distill Llama 70B",
        input_price="0.10",
        output_price="0.40",
        context_window=131072,
        sort_order=290,
    ),
]


def service_ids() -> list[str]:
    """Ids of all services (including retired ones), in display order."""
    return [s["id"] for s in sorted(SERVICES, key=lambda s: s["sort_order"])]
