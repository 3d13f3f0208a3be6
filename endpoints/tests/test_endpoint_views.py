import re

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from accounts.models import AuditEvent, Role
from accounts.services import management_token_create, user_create
from endpoints import keys as key_format
from endpoints.models import ApiKey, Endpoint
from endpoints.services import AllowlistError, api_key_create, endpoint_create, endpoint_update

pytestmark = pytest.mark.django_db


@pytest.fixture
def endpoint(team_a, owner_a):
    return endpoint_create(
        team=team_a, name="Wallet", services=["eth-mainnet", "solana", "llama-3.1-8b-instruct"], actor=owner_a
    )


def url(endpoint, tab=""):
    return f"/t/{endpoint.team.slug}/endpoints/{endpoint.public_id}/" + (f"{tab}/" if tab else "")


def test_create_an_endpoint_and_land_on_its_keys(client_for, owner_a, team_a):
    client = client_for(owner_a)
    response = client.post(
        f"/t/{team_a.slug}/endpoints/new/",
        {"name": "My dapp", "description": "", "environment": "test", "services": ["base", "sepolia"]},
    )
    endpoint = Endpoint.objects.get(name="My dapp")
    assert response.url == url(endpoint, "keys")
    assert endpoint.environment == "test"
    assert sorted(endpoint.services.values_list("id", flat=True)) == ["base", "sepolia"]
    assert AuditEvent.objects.filter(action="endpoint.created", team=team_a, target_id=str(endpoint.pk)).exists()


def test_endpoint_form_errors_sit_next_to_their_fields(client_for, owner_a, team_a):
    response = client_for(owner_a).post(f"/t/{team_a.slug}/endpoints/new/", {"name": "", "environment": "production"})
    assert response.status_code == 400
    assert response.context["form"].errors == {
        "name": ["This field is required."],
        "services": ["Enable at least one service."],
    }
    assert not Endpoint.objects.exists()


def test_overview_shows_ready_urls_and_a_curl_example(client_for, owner_a, endpoint):
    client = client_for(owner_a)
    before = client.get(url(endpoint)).content.decode()
    assert "https://eth-mainnet.gw.gatehouse.dev/v1/&lt;KEY_ID&gt;" in before
    key, _ = api_key_create(endpoint=endpoint, name="k", actor=owner_a)
    page = client.get(url(endpoint)).content.decode()
    assert f"https://eth-mainnet.gw.gatehouse.dev/v1/{key.key_id}" in page
    assert "eth_blockNumber" in page
    assert "getSlot" in page
    assert "&quot;model&quot;: &quot;llama-3.1-8b-instruct&quot;" in page
    assert 'data-copy-target="#url-eth-mainnet"' in page


def test_htmx_tab_switch_returns_only_the_panel(client_for, owner_a, endpoint):
    response = client_for(owner_a).get(url(endpoint, "security"), HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert html.lstrip().startswith('<div id="tab-panel">')
    assert "<html" not in html
    assert "Allowed origins" in html


# --- keys ----------------------------------------------------------------------------------


def test_key_secret_is_shown_once_and_never_again(client_for, owner_a, endpoint):
    client = client_for(owner_a)
    response = client.post(url(endpoint, "keys"), {"name": "server", "expires_in": "30", "daily_unit_cap": "1000000"})
    assert response.status_code == 201
    assert response["Cache-Control"] == "no-store"
    secret = response.context["created_secret"]
    assert key_format.is_well_formed(secret)
    assert secret in response.content.decode()
    key = ApiKey.objects.get()
    assert (key.name, key.daily_unit_cap) == ("server", 1_000_000)
    assert key.secret_hash == key_format.secret_hash(secret)
    assert secret not in client.get(url(endpoint, "keys")).content.decode()
    event = AuditEvent.objects.get(action="key.created")
    assert secret not in str(event.after)


def test_unverified_users_cannot_create_keys(client_for, team_a, endpoint):
    user = user_create(email="unverified@a.example", password="x", email_verified=False)
    team_a.memberships.create(user=user, role=Role.DEVELOPER)
    client = client_for(user)
    assert "Verify your email address before creating API keys" in client.get(url(endpoint, "keys")).content.decode()
    response = client.post(url(endpoint, "keys"), {"name": "sneaky", "expires_in": "never"})
    assert response.status_code == 400
    assert not ApiKey.objects.exists()


def test_rotate_and_revoke_from_the_keys_tab(client_for, owner_a, endpoint):
    client = client_for(owner_a)
    key, _ = api_key_create(endpoint=endpoint, name="server", actor=owner_a)
    rotated = client.post(f"/t/{endpoint.team.slug}/keys/{key.key_id}/rotate", {"overlap": "7d"})
    assert rotated.status_code == 201
    assert rotated["Cache-Control"] == "no-store"
    new_secret = rotated.context["created_secret"]
    new = ApiKey.objects.get(secret_hash=key_format.secret_hash(new_secret))
    key.refresh_from_db()
    assert key.replaced_by == new
    assert key.valid_until is not None
    assert "keeps working until" in rotated.content.decode()
    client.post(f"/t/{endpoint.team.slug}/keys/{new.key_id}/revoke")
    new.refresh_from_db()
    assert new.revoked_at is not None
    assert list(
        AuditEvent.objects.filter(action__in=["key.rotated", "key.revoked"])
        .order_by("id")
        .values_list("action", flat=True)
    ) == ["key.rotated", "key.revoked"]


def test_viewers_see_keys_but_no_secret_and_no_actions(client_for, owner_a, member_of, endpoint):
    key, secret = api_key_create(endpoint=endpoint, name="server", actor=owner_a)
    page = client_for(member_of(Role.VIEWER)).get(url(endpoint, "keys")).content.decode()
    assert key.key_id in page
    assert secret not in page
    assert "Revoke" not in page
    assert "New API key" not in page


def test_finance_cannot_open_endpoints(client_for, member_of, endpoint):
    finance = client_for(member_of(Role.FINANCE))
    assert finance.get(f"/t/{endpoint.team.slug}/endpoints/").status_code == 403
    assert finance.get(url(endpoint, "keys")).status_code == 403


# --- security tab: allowlists --------------------------------------------------------------------

GOOD = {
    "secret_key_required": "on",
    "rate_limit_rps": "20",
    "monthly_unit_cap": "1000000",
    "allowed_origins": "https://app.example.com\n*.example.org\n",
    "allowed_user_agents": "MyApp/",
    "allowed_ips": "203.0.113.7\n10.0.0.0/8",
    "contracts__eth-mainnet": "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed",
    "contracts__solana": "So11111111111111111111111111111111111111112",
    "methods__eth-mainnet": "eth_call\neth_getBalance",
    "methods__llama-3.1-8b-instruct": "chat.completions",
}


def test_valid_allowlists_are_saved_normalised(client_for, owner_a, endpoint):
    response = client_for(owner_a).post(url(endpoint, "security"), GOOD)
    assert response.status_code == 302
    endpoint.refresh_from_db()
    assert endpoint.secret_key_required is True
    assert (endpoint.rate_limit_rps, endpoint.monthly_unit_cap) == (20, 1_000_000)
    assert endpoint.allowed_origins == ["https://app.example.com", "*.example.org"]
    assert endpoint.allowed_ips == ["203.0.113.7", "10.0.0.0/8"]
    assert endpoint.allowed_contracts == {
        "eth-mainnet": ["0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"],
        "solana": ["So11111111111111111111111111111111111111112"],
    }
    assert endpoint.allowed_methods == {
        "eth-mainnet": ["eth_call", "eth_getBalance"],
        "llama-3.1-8b-instruct": ["chat.completions"],
    }
    assert AuditEvent.objects.filter(action="endpoint.updated", after__rate_limit_rps=20).exists()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("allowed_origins", "htp://x", "is not an origin"),
        ("allowed_origins", "\n".join(f"https://a{i}.example.com" for i in range(101)), "At most 100 entries"),
        ("allowed_ips", "10.0.0.1/24", "did you mean 10.0.0.0/24?"),
        ("allowed_ips", "999.1.1.1", "999.1.1.1"),
        ("allowed_user_agents", "bad\x07agent", "bad"),
        ("contracts__eth-mainnet", "0x5AAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", "EIP-55"),
        ("contracts__eth-mainnet", "0x123", "0x123"),
        ("contracts__solana", "0OIl", "0OIl"),
        ("methods__eth-mainnet", "eth_cal", "did you mean eth_call"),
        ("rate_limit_rps", "0", "greater than or equal to 1"),
    ],
)
def test_any_invalid_entry_is_reported_next_to_its_field_and_nothing_is_saved(
    client_for, owner_a, endpoint, field, value, message
):
    before = Endpoint.objects.filter(pk=endpoint.pk).values().get()
    response = client_for(owner_a).post(url(endpoint, "security"), {**GOOD, field: value})
    assert response.status_code == 400
    errors = " ".join(response.context["form"].errors[field])
    assert message in errors
    assert message in response.content.decode().replace("&quot;", '"').replace("&#x27;", "'")
    assert Endpoint.objects.filter(pk=endpoint.pk).values().get() == before


def test_the_service_validates_allowlists_itself_and_reports_every_bad_list(owner_a, endpoint):
    before = Endpoint.objects.filter(pk=endpoint.pk).values().get()
    with pytest.raises(AllowlistError) as refused:
        endpoint_update(
            endpoint=endpoint,
            actor=owner_a,
            allowed_origins=["https://ok.example.com", "nope"],
            allowed_contracts={"llama-3.1-8b-instruct": ["0x0"], "eth-mainnet": []},
            allowed_methods={"eth-mainnet": ["eth_cal"], "base": ["eth_call"]},
        )
    assert [(e.field, e.code) for e in refused.value.errors] == [
        ("allowed_origins", "invalid"),
        ("allowed_contracts.llama-3.1-8b-instruct", "unknown_service"),
        ("allowed_methods.eth-mainnet", "invalid"),
        ("allowed_methods.base", "unknown_service"),
    ]
    assert (refused.value.field, refused.value.status) == ("allowed_origins", 400)
    assert Endpoint.objects.filter(pk=endpoint.pk).values().get() == before
    updated = endpoint_update(
        endpoint=endpoint,
        actor=owner_a,
        allowed_origins=["HTTPS://App.Example.com:443/"],
        allowed_contracts={"eth-mainnet": ["0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed"], "solana": []},
    )
    assert updated.allowed_origins == ["https://app.example.com"]
    assert updated.allowed_contracts == {"eth-mainnet": ["0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"]}


# --- settings tab --------------------------------------------------------------------------


def test_inline_rename_with_htmx(client_for, owner_a, endpoint):
    client = client_for(owner_a)
    form = client.get(f"{url(endpoint)}name?edit=1", HTTP_HX_REQUEST="true").content.decode()
    assert 'name="name"' in form
    saved = client.post(f"{url(endpoint)}name", {"name": "Renamed wallet"}, HTTP_HX_REQUEST="true")
    assert '<h1 class="inline-title">Renamed wallet</h1>' in saved.content.decode()
    refused = client.post(f"{url(endpoint)}name", {"name": "  "}, HTTP_HX_REQUEST="true")
    assert refused.status_code == 400
    assert "Give the endpoint a name." in refused.content.decode()
    endpoint.refresh_from_db()
    assert endpoint.name == "Renamed wallet"


def test_pause_resume_and_delete_with_typed_name(client_for, owner_a, endpoint):
    client = client_for(owner_a)
    key, _ = api_key_create(endpoint=endpoint, name="k", actor=owner_a)
    client.post(f"{url(endpoint)}pause", {"paused": "1"})
    endpoint.refresh_from_db()
    assert endpoint.status == "paused"
    client.post(f"{url(endpoint)}pause", {"paused": "0"})
    endpoint.refresh_from_db()
    assert endpoint.status == "active"
    client.post(f"{url(endpoint)}delete", {"confirmation": "wrong"})
    assert Endpoint.objects.live().filter(pk=endpoint.pk).exists()
    response = client.post(f"{url(endpoint)}delete", {"confirmation": "Wallet"})
    assert response.url == f"/t/{endpoint.team.slug}/endpoints/"
    key.refresh_from_db()
    assert key.revoked_at is not None
    assert client.get(url(endpoint)).status_code == 404


def test_list_page_counts_keys_with_few_queries(client_for, owner_a, team_a, django_assert_max_num_queries):
    for n in range(8):
        endpoint = endpoint_create(team=team_a, name=f"e{n}", services=["base", "eth-mainnet"], actor=owner_a)
        for k in range(3):
            api_key_create(endpoint=endpoint, name=f"k{k}", actor=owner_a)
    client = client_for(owner_a)
    with django_assert_max_num_queries(13):  # 12, and the traffic-stop banner's one on every team page
        page = client.get(f"/t/{team_a.slug}/endpoints/")
    assert len(re.findall(r"<td>3</td>", page.content.decode())) == 8


# --- the REST API ------------------------------------------------------------------------------


@pytest.fixture
def api(team_a, owner_a):
    _token, secret = management_token_create(team=team_a, name="ci", scopes=["read", "write"], actor=owner_a)
    return Client(HTTP_AUTHORIZATION=f"Bearer {secret}")


def test_api_endpoint_and_key_lifecycle(api, team_a):
    base = f"/api/v1/teams/{team_a.slug}"
    created = api.post(
        f"{base}/endpoints/", {"name": "API made", "services": ["base"]}, content_type="application/json"
    )
    assert created.status_code == 201
    endpoint_id = created.json()["id"]
    key = api.post(f"{base}/endpoints/{endpoint_id}/keys/", {"name": "k"}, content_type="application/json").json()
    assert key_format.is_well_formed(key["secret"])
    listed = api.get(f"{base}/endpoints/{endpoint_id}/keys/").json()
    assert [k["key_id"] for k in listed] == [key["key_id"]]
    assert "secret" not in listed[0]
    rotated = api.post(
        f"{base}/keys/{key['key_id']}/rotate/", {"overlap": "1h"}, content_type="application/json"
    ).json()
    assert rotated["secret"] != key["secret"]
    old = api.get(f"{base}/keys/{key['key_id']}/").json()
    assert (old["status"], old["replaced_by"]) == ("active", rotated["key_id"])
    revoked = api.post(f"{base}/keys/{rotated['key_id']}/revoke/").json()
    assert revoked["status"] == "revoked"
    patched = api.patch(
        f"{base}/endpoints/{endpoint_id}/", {"paused": True, "rate_limit_rps": 10}, content_type="application/json"
    ).json()
    assert (patched["status"], patched["rate_limit_rps"]) == ("paused", 10)
    assert api.delete(f"{base}/endpoints/{endpoint_id}/").status_code == 204
    assert api.get(f"{base}/endpoints/{endpoint_id}/").status_code == 404


def test_api_rejects_bad_allowlists_entry_by_entry_and_saves_nothing(api, team_a, endpoint):
    before = Endpoint.objects.filter(pk=endpoint.pk).values().get()
    response = api.patch(
        f"/api/v1/teams/{team_a.slug}/endpoints/{endpoint.public_id}/",
        {
            "rate_limit_rps": 5,
            "allowlists": {
                "origins": ["https://ok.example.com", "nope"],
                "contracts": {"base": ["0x0"]},
                "methods": {"eth-mainnet": ["eth_cal"]},
            },
        },
        content_type="application/json",
    )
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid"
    assert set(body["errors"]) == {"origins", "contracts.base", "methods.eth-mainnet"}
    assert "nope" in body["errors"]["origins"][0]
    assert Endpoint.objects.filter(pk=endpoint.pk).values().get() == before


def test_identify_refuses_malformed_secrets_without_touching_keys(api, team_a, owner_a, endpoint):
    key, secret = api_key_create(endpoint=endpoint, name="k", actor=owner_a)
    path = f"/api/v1/teams/{team_a.slug}/keys/identify/"
    with CaptureQueriesContext(connection) as queries:
        response = api.post(
            path, {"secret": secret[:-1] + ("A" if secret[-1] != "A" else "B")}, content_type="application/json"
        )
    assert response.status_code == 400
    assert response.json()["code"] == "malformed_key"
    assert not [q for q in queries.captured_queries if "endpoints_apikey" in q["sql"]]
    found = api.post(path, {"secret": secret}, content_type="application/json")
    assert found.json()["key_id"] == key.key_id


def test_services_catalog_api(client_for, owner_a):
    services = client_for(owner_a).get("/api/v1/services/").json()
    ids = [s["id"] for s in services]
    assert {
        "eth-mainnet",
        "base",
        "arbitrum",
        "optimism",
        "polygon",
        "bsc",
        "avalanche",
        "gnosis",
        "solana",
        "sepolia",
    } <= set(ids)
    llms = [s for s in services if s["kind"] == "llm"]
    assert len(llms) >= 5
    assert all(s["input_price_per_million"] and s["output_price_per_million"] for s in llms)
    eth = next(s for s in services if s["id"] == "eth-mainnet")
    assert eth["method_compute_units"]["eth_getLogs"] > eth["compute_units"]
