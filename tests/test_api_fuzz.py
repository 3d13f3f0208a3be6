"""Schemathesis over the whole OpenAPI schema: every operation of the team API (with a management token) and of the
gateway API (with a gateway credential), fed generated valid and invalid input, and then stateful sequences along
the links Schemathesis infers from the schema. The bar: no server error, and every answer — status, content type,
body — as the schema says.

The schema is the one /api/schema/ serves (drf-spectacular), and the app is called in-process (WSGI) against the
real test database; fixtures give the calls a real team, endpoint, key, member and invitation to find.
"""

from __future__ import annotations

import json

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.renderers import OpenApiJsonRenderer
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi import checks

from accounts.models import Membership, Role
from accounts.services import invitation_create, management_token_create
from endpoints.services import api_key_create, endpoint_create, gateway_credential_create

pytestmark = pytest.mark.django_db


def _schema_document() -> dict:
    document = SchemaGenerator().get_schema(request=None, public=True)
    return json.loads(OpenApiJsonRenderer().render(document, renderer_context={}))


# The usage push is NDJSON bytes: generated bodies go out as they are (whatever they hold, the answer must be a
# documented 4xx, never a 500).
schemathesis.serializer.alias("application/x-ndjson", "application/octet-stream")
schemathesis.serializer.alias("application/x-protobuf", "application/octet-stream")  # OTLP/HTTP's binary bodies

schema = schemathesis.openapi.from_dict(_schema_document())
schema.app = get_wsgi_application()

FUZZ_SETTINGS = settings(
    max_examples=30,
    deadline=None,
    derandomize=True,  # the same cases on every run: a failure is reproducible, CI is not a lottery
    suppress_health_check=list(HealthCheck),
)


class World:
    """Real objects the generated calls can reach, and the credentials to call with."""

    def __init__(self, team, owner, make_user) -> None:
        owner_membership = Membership.objects.get(team=team, user=owner)
        self.team = team
        self.endpoint = endpoint_create(team=team, name="Fuzzed", services=["eth-mainnet", "base"], actor=owner)
        self.key, _secret = api_key_create(endpoint=self.endpoint, name="fuzzed", actor=owner)
        member = make_user("member@fuzz.example")
        self.member = Membership.objects.create(team=team, user=member, role=Role.VIEWER)
        self.invitation, _ = invitation_create(team=team, email="invitee@fuzz.example", role=Role.VIEWER,
                                               invited_by=owner_membership)  # fmt: skip
        self.token = management_token_create(team=team, name="fuzz", scopes=["read", "write"], actor=owner)[1]
        self.gateway = gateway_credential_create(name="fuzz-gateway")[1]
        self.real = {
            "team_slug": team.slug,
            "endpoint_id": self.endpoint.public_id,
            "key_id": self.key.key_id,
            "membership_id": self.member.pk,
            "invitation_id": self.invitation.pk,
        }

    def prepare(self, case: schemathesis.Case) -> None:
        """Point the case at the team, and for every other case at real objects (the rest find nothing: 404)."""
        for name, value in list((case.path_parameters or {}).items()):
            if name == "team_slug" or (name in self.real and hash(str(value)) % 2 == 0):
                case.path_parameters[name] = self.real[name]

    def credential(self, case: schemathesis.Case) -> str:
        return self.gateway if case.path.startswith("/api/gateway/") else self.token


CURRENT: dict[str, World] = {}


@schema.auth()
class Credentials:
    """The gateway credential for the gateway API, the team's management token for the rest — given to Schemathesis
    as the API's real authentication, so its own checks can also try the API without it (and expect a 401)."""

    def get(self, case, ctx):
        world = CURRENT.get("world")
        return world.credential(case) if world else "none-outside-a-test"

    def set(self, case, data, ctx):
        # identity: the feed gzips big answers for gateways that ask; the checks read plain bodies
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}", "Accept-Encoding": "identity"}


@pytest.fixture
def world(team_a, owner_a, make_user, settings):
    settings.API_THROTTLE_RATES = {"token": "100000/min", "user": "100000/min", "anon": "100000/min"}
    # Django closes the database connection when a WSGI request ends; the test's transaction lives on that
    # connection, so keep it open as Django's own test client does.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    CURRENT["world"] = World(team_a, owner_a, make_user)
    yield CURRENT["world"]
    CURRENT.clear()
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


# What every answer must satisfy: never a server error; status, content type, headers and body as documented; a
# request without its credentials refused; a deleted object gone; methods the schema does not list refused.
# Not among them: Schemathesis's two input-strictness checks. "A schema-valid request is accepted" cannot hold: a
# schema cannot state every business rule (an unknown service id, a well-formed but wrong key secret, an empty
# batch), which are refused with a documented 4xx and a code. "A schema-violating request is refused" flags leniency,
# not breakage: DRF reads the number 0 as the name "0", and the dashboard's filters fall back to their defaults with
# a message, by design (tests/test_crafted_parameters.py pins what each parser answers).
CHECKS = [
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.response_headers_conformance,
    checks.ignored_auth,
    checks.use_after_free,
    checks.ensure_resource_availability,
    checks.unsupported_method,
    checks.missing_required_header,
]


@schema.parametrize()
@FUZZ_SETTINGS
def test_every_operation_answers_as_documented(case, world):
    world.prepare(case)
    case.call_and_validate(checks=[not_a_server_error, *CHECKS])


def test_stateful_sequences_answer_as_documented(world):
    class Workflow(schema.as_state_machine()):
        def before_call(self, case):
            world.prepare(case)

        def validate_response(self, response, case, additional_checks=None, **kwargs):
            case.validate_response(response, checks=[not_a_server_error, *CHECKS], transport_kwargs=kwargs)

    Workflow.run(settings=settings(max_examples=25, stateful_step_count=6, deadline=None, derandomize=True,
                                   suppress_health_check=list(HealthCheck)))  # fmt: skip
