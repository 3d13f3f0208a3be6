"""The demo data `make run` seeds: who to log in as. The seeding itself is `manage.py seed_demo`."""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict

DEMO_EMAIL = "demo@gatehouse.dev"
DEMO_PASSWORD = "demo-password-2026"  # noqa: S105 - a public demo login, printed by make run
DEMO_NAME = "Dana Demo"
DEMO_TEAM_NAME = "Acme Web3"
# Teammates share the demo password, one per role, so each role's view can be tried.
DEMO_TEAMMATES = [
    ("admin@gatehouse.dev", "Avery Admin", "admin"),
    ("dev@gatehouse.dev", "Devon Developer", "developer"),
    ("finance@gatehouse.dev", "Fran Finance", "finance"),
    ("viewer@gatehouse.dev", "Vic Viewer", "viewer"),
]


class DemoEndpoint(TypedDict):
    name: str
    description: str
    environment: str
    services: list[str]
    keys: list[str]
    security: NotRequired[dict[str, Any]]  # endpoint_update's settings


# Endpoints across RPC and LLM services. Their keys' secrets are not kept anywhere: usage is
# recorded by key id, which is all the traffic simulator needs.
DEMO_ENDPOINTS: list[DemoEndpoint] = [
    {
        "name": "Wallet backend",
        "description": "Balances and transaction sending for the Acme wallet.",
        "environment": "production",
        "services": ["eth-mainnet", "base", "arbitrum", "optimism"],
        "keys": ["api-server", "batch-jobs"],
        "security": {"secret_key_required": True, "rate_limit_rps": 500},
    },
    {
        "name": "NFT dapp (browser)",
        "description": "The public mint site; runs in the browser, so it is locked to our origins.",
        "environment": "production",
        "services": ["eth-mainnet", "polygon", "solana"],
        "keys": ["web"],
        "security": {
            "allowed_origins": ["https://app.acme-web3.dev", "*.acme-web3.dev"],
            "allowed_methods": {"eth-mainnet": ["eth_call", "eth_blockNumber", "eth_getBalance", "eth_chainId"]},
            "monthly_unit_cap": 500_000_000,
        },
    },
    {
        "name": "AI assistant",
        "description": "Support chat and embeddings for docs search.",
        "environment": "production",
        "services": ["llama-3.1-70b-instruct", "llama-3.1-8b-instruct", "deepseek-v3", "qwen-2.5-72b-instruct"],
        "keys": ["assistant"],
        "security": {"secret_key_required": True},
    },
    {
        "name": "Staging",
        "description": "Testnets for CI and QA.",
        "environment": "test",
        "services": ["sepolia", "base-sepolia", "solana"],
        "keys": ["ci"],
    },
]

# What the reference relay `make run` starts serves, and from what: every EVM chain of the demo from the one local
# Anvil (a demo chain, whatever the service is called), every model from the demo LLM upstream (relay.demo_llm).
# Solana has no local node: its live traffic stays synthetic. project/tests checks these against the catalog.
DEMO_EVM_SERVICES = ("eth-mainnet", "base", "arbitrum", "optimism", "polygon", "sepolia", "base-sepolia")
DEMO_LLM_SERVICES = ("llama-3.1-70b-instruct", "llama-3.1-8b-instruct", "deepseek-v3", "qwen-2.5-72b-instruct")
