"""A stateful fake of the Stripe API at the HTTP boundary, for tests.

Why HTTP and not mocks of stripe-python: the app talks to Stripe only through
``stripe.StripeClient`` (stripe-python 16, API version 2026-10-28.endive), which sends
its requests with ``requests``. Intercepting those requests with ``responses`` keeps the
real client in the loop (parameter encoding, retries, idempotency keys, error classes),
so tests can assert on exactly what would go over the wire.

Response bodies start from Stripe's own example objects (``fixtures3.json``) so their
shape matches this API version. Where this version moved a field, the fake follows it:

* invoice line price id: ``line["pricing"]["price_details"]["price"]`` (there is no
  ``line["price"]``);
* invoice subscription: ``invoice["parent"]["subscription_details"]["subscription"]``
  (there is no top-level ``invoice["subscription"]``);
* subscription period: on each item only, ``sub["items"]["data"][i]["current_period_start"]``
  / ``..._end`` (there is no top-level ``current_period_*`` any more);
* a meter event whose identifier Stripe already holds is a 400 ``invalid_request_error``
  saying "An event already exists with identifier …", with no ``code`` and
  ``Stripe-Should-Retry: false``;
* meter event summaries grouped by day need start and end at UTC midnight, by hour at an
  hour boundary.

Every request is also checked against stripe-python's generated parameter types
(``stripe_params``): an unknown or misspelled parameter is refused as Stripe refuses it.

Only the endpoints the app uses exist; any other URL answers 404 with a Stripe error,
so a test that strays off the map fails loudly instead of passing by accident.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import requests
import responses

from billing.tests import stripe_params

API_VERSION = "2026-10-28.endive"
API_BASE = "https://api.stripe.com"
# Stripe's example objects (from its public OpenAPI repository, MIT licence beside them), copied from
# ../shared/stripe/ so a clone of this repository tests on its own; a test checks the copy is current.
FIXTURES_PATH = Path(__file__).resolve().parent / "stripe" / "fixtures3.json"

HOUR = 3_600
DAY = 86_400
METER_EVENT_MAX_AGE = 35 * DAY
METER_EVENT_MAX_FUTURE = 5 * 60
DEFAULT_PAGE_SIZE = 10
MAX_PAGE_SIZE = 100
EMBEDDED_INVOICE_LINES = 10

IDEMPOTENCY_MISMATCH = (
    "Keys for idempotent requests can only be used with the same parameters they were first used with."
)

Json = dict[str, Any]


@dataclass(frozen=True)
class Call:
    """One request exactly as stripe-python sent it, so tests can assert on the wire format.

    ``params`` is the flat form encoding (``metadata[team_id]``, ``line_items[0][price]``,
    ``expand[0]``): the POST body or the GET query string. A repeated key keeps its last
    value (stripe-python never repeats keys: lists are sent as ``key[0]``, ``key[1]``...).
    """

    method: str
    path: str
    params: dict[str, str] = field(hash=False)
    idempotency_key: str | None


class _ApiError(Exception):
    """Raised by a handler to answer with a Stripe-shaped error, as the API would."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        error_type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        should_retry: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.headers = {} if should_retry is None else {"Stripe-Should-Retry": "true" if should_retry else "false"}
        self.body: Json = {"error": {"type": error_type, "message": message}}
        if code is not None:
            self.body["error"]["code"] = code
        if param is not None:
            self.body["error"]["param"] = param


@dataclass
class _Failure:
    """A queued fault: the next matching requests fail this way before normal handling resumes."""

    method: str
    path_prefix: str
    remaining: int
    status: int = 500
    body: Json | None = None
    should_retry: bool | None = None
    connection_error: bool = False
    after_processing: bool = False


@dataclass(frozen=True)
class _Stored:
    """A first response kept under its idempotency key, replayed for retries like Stripe does."""

    call: Call
    status: int
    body: str


_Handler = Callable[..., Json]


@cache
def _load_fixtures(path: Path) -> Mapping[str, Json]:
    """Read the fixture file once per run; callers deep-copy before changing anything."""
    with path.open(encoding="utf-8") as fh:
        return json.load(fh)["resources"]


def sign(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """Build a ``Stripe-Signature`` header for a webhook body, so webhook tests need no Stripe.

    Same scheme as Stripe: ``t=<ts>,v1=<hex HMAC-SHA256 of "<ts>.<payload>" keyed by secret>``.
    """
    ts = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode("utf-8"), f"{ts}.".encode() + payload, hashlib.sha256)
    return f"t={ts},v1={mac.hexdigest()}"


def _parse_params(encoded: str) -> dict[str, str]:
    """Flatten a form/query string the way tests assert on it (last value wins)."""
    return dict(urllib.parse.parse_qsl(encoded, keep_blank_values=True))


def _sub_dict(params: Mapping[str, str], name: str) -> dict[str, str]:
    """Collect ``name[key]=value`` params into ``{key: value}`` (metadata, payload)."""
    pattern = re.compile(re.escape(name) + r"\[([^\]]+)\]")
    return {m.group(1): value for key, value in params.items() if (m := pattern.fullmatch(key))}


def _expand_list(params: Mapping[str, str]) -> list[str]:
    """The ``expand[i]`` values in index order."""
    found = []
    for key, value in params.items():
        if m := re.fullmatch(r"expand\[(\d+)\]", key):
            found.append((int(m.group(1)), value))
    return [value for _, value in sorted(found)]


def _require(params: Mapping[str, str], name: str) -> str:
    """A required parameter, or the 400 Stripe gives when it is missing."""
    if name not in params:
        raise _ApiError(400, f"Missing required param: {name}.", code="parameter_missing", param=name)
    return params[name]


def _int_param(params: Mapping[str, str], name: str, default: int | None = None) -> int:
    """An integer parameter, or the 400 Stripe gives for a malformed one."""
    raw = params.get(name)
    if raw is None:
        if default is None:
            raise _ApiError(400, f"Missing required param: {name}.", code="parameter_missing", param=name)
        return default
    try:
        return int(raw)
    except ValueError:
        raise _ApiError(400, f"Invalid integer: {raw}", code="parameter_invalid_integer", param=name) from None


def _no_such(kind: str, obj_id: str) -> _ApiError:
    """The 404 Stripe gives for an unknown id in the URL."""
    return _ApiError(404, f"No such {kind}: '{obj_id}'", code="resource_missing", param="id")


class FakeStripe:
    """In-memory Stripe for tests: records every request and answers like the real API would.

    Use as a context manager (``with FakeStripe() as fake:`` or :func:`fake_stripe`); while
    active, every ``requests`` call to ``https://api.stripe.com/v1/...`` is answered here and
    any other host is refused by ``responses`` (unless listed in ``passthru_prefixes``).
    """

    def __init__(
        self,
        *,
        now: int | None = None,
        fixtures_path: Path = FIXTURES_PATH,
        passthru_prefixes: Sequence[str] = (),
    ) -> None:
        self._now = now
        self._fixtures = _load_fixtures(fixtures_path)
        self._lock = threading.RLock()
        self._counters: dict[str, int] = {}
        self._failures: list[_Failure] = []
        self._idempotent: dict[str, _Stored] = {}
        self.calls: list[Call] = []
        self.customers: dict[str, Json] = {}
        self.subscriptions: dict[str, Json] = {}
        self.invoices: dict[str, Json] = {}
        self.invoice_lines: dict[str, list[Json]] = {}
        self.payment_methods: dict[str, Json] = {}
        self.checkout_sessions: dict[str, Json] = {}
        self.checkout_session_params: dict[str, dict[str, str]] = {}  # what each session was created with
        self.billing_portal_sessions: dict[str, Json] = {}
        self.meter_events: list[Json] = []
        self.contract_errors: list[str] = []  # requests Stripe would have refused for their parameters
        self._mock = responses.RequestsMock(
            assert_all_requests_are_fired=False, passthru_prefixes=tuple(passthru_prefixes)
        )
        url = re.compile(re.escape(API_BASE) + r"/v1/.*")
        for method in ("GET", "POST", "DELETE"):
            self._mock.add_callback(method, url, callback=self._callback, content_type="application/json")
        obj = r"(?P<obj_id>[^/]+)"
        self._routes: list[tuple[str, re.Pattern[str], _Handler]] = [
            ("POST", re.compile(r"/v1/customers"), self._create_customer),
            ("GET", re.compile(rf"/v1/customers/{obj}"), self._retrieve_customer),
            ("POST", re.compile(r"/v1/checkout/sessions"), self._create_checkout_session),
            ("GET", re.compile(rf"/v1/checkout/sessions/{obj}"), self._retrieve_checkout_session),
            ("POST", re.compile(r"/v1/billing_portal/sessions"), self._create_portal_session),
            ("GET", re.compile(rf"/v1/subscriptions/{obj}"), self._retrieve_subscription),
            ("DELETE", re.compile(rf"/v1/subscriptions/{obj}"), self._cancel_subscription),
            ("GET", re.compile(rf"/v1/invoices/{obj}"), self._retrieve_invoice),
            ("GET", re.compile(rf"/v1/invoices/{obj}/lines"), self._list_invoice_lines),
            ("GET", re.compile(rf"/v1/payment_methods/{obj}"), self._retrieve_payment_method),
            ("POST", re.compile(r"/v1/billing/meter_events"), self._create_meter_event),
            ("GET", re.compile(rf"/v1/billing/meters/{obj}/event_summaries"), self._list_event_summaries),
        ]

    # -- lifecycle ---------------------------------------------------------------------

    def __enter__(self) -> FakeStripe:
        self._mock.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._mock.stop(allow_assert=False)

    @property
    def now(self) -> int:
        """The fake's clock (Unix seconds): real time unless a test pinned it."""
        return int(time.time()) if self._now is None else self._now

    @now.setter
    def now(self, value: int | None) -> None:
        self._now = value

    # -- recording and fault injection -------------------------------------------------

    def calls_to(self, method: str, path_prefix: str) -> list[Call]:
        """The recorded calls with this method whose path starts with ``path_prefix``."""
        return [c for c in self.calls if c.method == method.upper() and c.path.startswith(path_prefix)]

    def reset_calls(self) -> None:
        """Forget recorded calls (state and idempotency records stay)."""
        self.calls.clear()

    def fail_next(
        self,
        method: str,
        path_prefix: str,
        status: int = 500,
        times: int = 1,
        body: Json | None = None,
        *,
        should_retry: bool | None = None,
    ) -> None:
        """Answer the next ``times`` matching requests with ``status`` before normal handling.

        The body defaults to a Stripe error (``api_error`` for 5xx). ``should_retry`` sets the
        ``Stripe-Should-Retry`` header, which stripe-python obeys over the status code.
        The request is not processed and nothing is stored under its idempotency key.
        """
        self._failures.append(_Failure(method.upper(), path_prefix, times, status, body, should_retry))

    def timeout_next(self, method: str, path_prefix: str, times: int = 1, *, after_processing: bool = False) -> None:
        """Make the next ``times`` matching requests raise ``requests.ConnectionError``.

        With ``after_processing`` the request is handled (state changes, idempotency record
        kept) and only the response is lost, the case idempotency keys exist for.
        """
        self._failures.append(
            _Failure(method.upper(), path_prefix, times, connection_error=True, after_processing=after_processing)
        )

    def _take_failure(self, method: str, path: str) -> _Failure | None:
        for failure in self._failures:
            if failure.remaining > 0 and failure.method == method and path.startswith(failure.path_prefix):
                failure.remaining -= 1
                return failure
        return None

    # -- HTTP plumbing -----------------------------------------------------------------

    def _callback(self, request: requests.PreparedRequest) -> Exception | tuple[int, dict[str, str], str]:
        """Entry point for ``responses``: record, inject faults, apply idempotency, dispatch."""
        with self._lock:
            split = urllib.parse.urlsplit(request.url or "")
            method = (request.method or "GET").upper()
            params = _parse_params(split.query)
            if method == "POST" and request.body:
                body = request.body.decode("utf-8") if isinstance(request.body, bytes) else request.body
                params.update(_parse_params(body))
            call = Call(method, split.path, params, request.headers.get("Idempotency-Key"))
            self.calls.append(call)
            headers = {"Request-Id": self._new_id("req_test"), "Stripe-Version": API_VERSION}

            failure = self._take_failure(method, call.path)
            if failure is not None and not failure.after_processing:
                return self._failure_response(failure, headers)
            status, text, extra = self._respond(call)
            if failure is not None:
                return requests.exceptions.ConnectionError("FakeStripe: response lost after processing")
            return status, headers | extra, text

    def _failure_response(
        self, failure: _Failure, headers: dict[str, str]
    ) -> Exception | tuple[int, dict[str, str], str]:
        if failure.connection_error:
            return requests.exceptions.ConnectionError("FakeStripe: injected connection error")
        error_type = "api_error" if failure.status >= 500 else "invalid_request_error"
        body = failure.body or {
            "error": {"type": error_type, "message": f"FakeStripe injected a {failure.status} response."}
        }
        if failure.should_retry is not None:
            headers = headers | {"Stripe-Should-Retry": "true" if failure.should_retry else "false"}
        return failure.status, headers, json.dumps(body)

    def _respond(self, call: Call) -> tuple[int, str, dict[str, str]]:
        """Replay or reject a reused idempotency key; otherwise run the handler."""
        key = call.idempotency_key
        if call.method == "POST" and key is not None:
            stored = self._idempotent.get(key)
            if stored is not None:
                if (stored.call.path, stored.call.params) != (call.path, call.params):
                    error = _ApiError(400, IDEMPOTENCY_MISMATCH, error_type="idempotency_error")
                    return error.status, json.dumps(error.body), {}
                return stored.status, stored.body, {"Idempotent-Replayed": "true"}
        status, body, headers = self._dispatch(call)
        text = json.dumps(body)
        # Like Stripe, only results of requests that ran are kept; validation errors are not.
        if call.method == "POST" and key is not None and 200 <= status < 300:
            self._idempotent[key] = _Stored(call, status, text)
        return status, text, headers

    def _dispatch(self, call: Call) -> tuple[int, Json, dict[str, str]]:
        # Every request is checked against stripe-python's generated parameter types first, as Stripe checks it
        # against its API: an unknown, misspelled or mistyped parameter is a 400, never silently ignored.
        expected = stripe_params.params_type(call.method, call.path)
        if expected is not None:
            try:
                stripe_params.check(expected, call.params)
            except stripe_params.InvalidParamsError as error:
                self.contract_errors.append(f"{call.method} {call.path}: {error}")
                code = "parameter_unknown" if "unknown parameter" in str(error) else "parameter_invalid"
                return 400, _ApiError(400, str(error), code=code, param=error.param).body, {}
        for method, pattern, handler in self._routes:
            if method == call.method and (m := pattern.fullmatch(call.path)):
                try:
                    return 200, handler(call.params, **m.groupdict()), {}
                except _ApiError as error:
                    return error.status, error.body, error.headers
        message = (
            f"Unrecognized request URL ({call.method}: {call.path}). FakeStripe implements only the "
            "endpoints the app uses; add this one to billing/tests/stripe_fake.py if it is needed."
        )
        return 404, _ApiError(404, message).body, {}

    # -- object helpers ----------------------------------------------------------------

    def _fixture(self, name: str) -> Json:
        return copy.deepcopy(self._fixtures[name])

    def _new_id(self, prefix: str) -> str:
        """Deterministic ids (``cus_test0001``...), one counter per prefix, so tests can hard-code them."""
        self._counters[prefix] = self._counters.get(prefix, 0) + 1
        return f"{prefix}{self._counters[prefix]:04d}"

    def _stores(self) -> tuple[dict[str, Json], ...]:
        return (
            self.customers,
            self.subscriptions,
            self.invoices,
            self.payment_methods,
            self.checkout_sessions,
            self.billing_portal_sessions,
        )

    def _find(self, obj_id: str) -> Json | None:
        for store in self._stores():
            if obj_id in store:
                return store[obj_id]
        return None

    def get(self, obj_id: str) -> Json:
        """The stored object with this id (the live dict, not a copy)."""
        obj = self._find(obj_id)
        if obj is None:
            raise KeyError(f"FakeStripe has no object {obj_id!r}")
        return obj

    def update(self, obj_id: str, **overrides: Any) -> Json:
        """Change a stored object's top-level fields, keeping derived fields consistent.

        Invoices: a new ``status`` recomputes ``amount_paid``/``amount_remaining``, fills the
        matching ``status_transitions`` timestamp with ``now`` and the hosted URLs, unless the
        same call overrides them. Subscriptions: ``current_period_*`` go to every item (Stripe keeps them there
        only, not at the top level).
        """
        obj = self.get(obj_id)
        if obj.get("object") == "invoice":
            if "lines" in overrides:
                raise ValueError("FakeStripe.update cannot change invoice lines; build another invoice")
            if "status" in overrides:
                obj["status"] = overrides["status"]
                self._apply_invoice_status(obj, self.now)
        if obj.get("object") == "subscription":
            for key in ("current_period_start", "current_period_end"):
                if key in overrides:
                    for item in obj["items"]["data"]:
                        item[key] = overrides.pop(key)
        obj.update(overrides)
        return obj

    def _render(self, obj: Json, params: Mapping[str, str]) -> Json:
        """A copy of ``obj`` with requested top-level ``expand`` fields embedded.

        Fields that hold the id of a stored object are embedded; ids the fake does not hold
        stay strings. Nested paths and unknown fields are rejected so tests notice.
        """
        out = copy.deepcopy(obj)
        for path in _expand_list(params):
            if "." in path or path not in out:
                raise _ApiError(400, f"This property cannot be expanded ({path}).", param="expand")
            value = out[path]
            if isinstance(value, str) and (target := self._find(value)) is not None:
                out[path] = copy.deepcopy(target)
        return out

    def _page(self, items: Sequence[Json], params: Mapping[str, str], url: str) -> Json:
        """A Stripe list page honouring ``limit``, ``starting_after`` and ``ending_before``."""
        if _expand_list(params):
            raise _ApiError(400, "FakeStripe does not expand list responses.", param="expand")
        limit = _int_param(params, "limit", DEFAULT_PAGE_SIZE)
        if not 1 <= limit <= MAX_PAGE_SIZE:
            raise _ApiError(400, "Invalid limit: must be between 1 and 100", param="limit")
        ids = [item["id"] for item in items]
        for cursor in ("starting_after", "ending_before"):
            if cursor in params and params[cursor] not in ids:
                raise _ApiError(400, f"Invalid {cursor} id: {params[cursor]}", param=cursor)
        if "starting_after" in params:
            rest = list(items[ids.index(params["starting_after"]) + 1 :])
            page, has_more = rest[:limit], len(rest) > limit
        elif "ending_before" in params:
            rest = list(items[: ids.index(params["ending_before"])])
            page, has_more = rest[-limit:], len(rest) > limit
        else:
            page, has_more = list(items[:limit]), len(items) > limit
        return {"object": "list", "data": copy.deepcopy(page), "has_more": has_more, "url": url}

    # -- builders (no HTTP) ------------------------------------------------------------

    def add_customer(self, **overrides: Any) -> Json:
        """Store a customer built from Stripe's example, without a request."""
        customer = self._fixture("customer")
        customer.update(
            id=self._new_id("cus_test"),
            created=self.now,
            discount=None,
            shipping=None,
            metadata={},
            livemode=False,
        )
        customer.update(overrides)
        self.customers[customer["id"]] = customer
        return customer

    def add_payment_method(
        self,
        customer: str | None,
        brand: str = "visa",
        last4: str = "4242",
        exp_month: int = 12,
        exp_year: int = 2030,
        **overrides: Any,
    ) -> Json:
        """Store a card payment method, e.g. to expand a subscription's default one."""
        pm = self._fixture("payment_method")
        pm.update(id=self._new_id("pm_test"), customer=customer, created=self.now, metadata={}, livemode=False)
        pm["card"].update(
            brand=brand,
            display_brand=brand,
            last4=last4,
            exp_month=exp_month,
            exp_year=exp_year,
            wallet=None,
            generated_from=None,
        )
        pm["card"]["networks"]["available"] = [brand]
        pm.update(overrides)
        self.payment_methods[pm["id"]] = pm
        return pm

    def add_subscription(
        self,
        customer: str,
        *,
        status: str = "active",
        price_ids: Sequence[str] = ("price_fee", "price_usage"),
        current_period_start: int | None = None,
        current_period_end: int | None = None,
        metadata: Mapping[str, str] | None = None,
        default_payment_method: str | None = None,
        cancel_at_period_end: bool = False,
        **overrides: Any,
    ) -> Json:
        """Store a subscription with one item per price; periods default to [now, now + 30 days)."""
        start = self.now if current_period_start is None else current_period_start
        end = start + 30 * DAY if current_period_end is None else current_period_end
        sub = self._fixture("subscription")
        sub_id = self._new_id("sub_test")
        template = sub["items"]["data"][0]
        items = []
        for price_id in price_ids:
            item = copy.deepcopy(template)
            item.update(
                id=self._new_id("si_test"),
                created=start,
                subscription=sub_id,
                metadata={},
                current_period_start=start,
                current_period_end=end,
                billing_thresholds=None,
            )
            item["price"].update(id=price_id, created=start)
            item["plan"].update(id=price_id, currency="usd")
            items.append(item)
        sub.update(
            id=sub_id,
            customer=customer,
            status=status,
            metadata=dict(metadata or {}),
            default_payment_method=default_payment_method,
            cancel_at_period_end=cancel_at_period_end,
            cancel_at=None,
            canceled_at=None,
            ended_at=None,
            created=start,
            start_date=start,
            billing_cycle_anchor=start,
            trial_start=None,
            trial_end=None,
            next_pending_invoice_item_invoice=None,
            pending_update=None,
            pause_collection=None,
            transfer_data=None,
            latest_invoice=None,
            livemode=False,
            items={
                "object": "list",
                "data": items,
                "has_more": False,
                "url": f"/v1/subscription_items?subscription={sub_id}",
            },
        )
        sub.update(overrides)
        self.subscriptions[sub["id"]] = sub
        return sub

    def add_invoice(
        self,
        customer: str,
        *,
        status: str = "open",
        lines: Sequence[Mapping[str, Any]] = (),
        period_start: int | None = None,
        period_end: int | None = None,
        due_date: int | None = None,
        subscription: str | None = None,
        attempt_count: int = 0,
        metadata: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> Json:
        """Store an invoice whose totals are the sum of its lines.

        Each line is a mapping with ``amount`` and optionally ``description``, ``quantity``
        (1), ``price``, ``product``, ``period`` ({start, end}; default the invoice period),
        ``subscription_item``, ``metadata``. All lines are kept in ``invoice_lines[id]``; the
        invoice embeds the first 10 like Stripe. ``created`` defaults to ``now``, periods to
        ``created``.
        """
        created = overrides.pop("created", self.now)
        period_start = created if period_start is None else period_start
        period_end = created if period_end is None else period_end
        inv = self._fixture("invoice")
        inv_id = overrides.get("id") or self._new_id("in_test")
        built = [
            self._build_line(inv_id, line, subscription, {"start": period_start, "end": period_end}) for line in lines
        ]
        total = sum(line["amount"] for line in built)
        stored_customer = self.customers.get(customer, {})
        stored_sub = self.subscriptions.get(subscription or "", {})
        inv.pop("subscription", None)  # gone from the top level in this API version: see ``parent``
        inv.update(
            id=inv_id,
            number=self._new_id("GH-"),
            customer=customer,
            customer_email=stored_customer.get("email"),
            customer_name=stored_customer.get("name"),
            status=status,
            currency="usd",
            subtotal=total,
            subtotal_excluding_tax=total,
            total=total,
            total_excluding_tax=total,
            amount_due=total,
            amount_overpaid=0,
            amount_shipping=0,
            shipping_cost=None,
            from_invoice=None,
            billing_reason="subscription_cycle" if subscription else "manual",
            hosted_invoice_url=None,
            invoice_pdf=None,
            period_start=period_start,
            period_end=period_end,
            created=created,
            due_date=due_date,
            attempt_count=attempt_count,
            attempted=attempt_count > 0,
            next_payment_attempt=None,
            last_finalization_error=None,
            webhooks_delivered_at=None,
            metadata=dict(metadata or {}),
            livemode=False,
            lines={
                "object": "list",
                "data": copy.deepcopy(built[:EMBEDDED_INVOICE_LINES]),
                "has_more": len(built) > EMBEDDED_INVOICE_LINES,
                "url": f"/v1/invoices/{inv_id}/lines",
            },
            parent=None
            if subscription is None
            else {
                "type": "subscription_details",
                "quote_details": None,
                "subscription_details": {
                    "subscription": subscription,
                    "metadata": copy.deepcopy(stored_sub.get("metadata")),
                    "subscription_proration_date": None,
                },
            },
        )
        inv["status_transitions"] = dict.fromkeys(inv["status_transitions"])
        self._apply_invoice_status(inv, created)
        inv.update(overrides)
        self.invoices[inv["id"]] = inv
        self.invoice_lines[inv["id"]] = built
        return inv

    def _build_line(self, inv_id: str, line: Mapping[str, Any], subscription: str | None, default_period: Json) -> Json:
        """One invoice line in this API version's shape (price under ``pricing.price_details``)."""
        out = self._fixture("line_item")
        amount = int(line["amount"])
        price = line.get("price")
        out.update(
            id=line.get("id") or self._new_id("il_test"),
            invoice=inv_id,
            amount=amount,
            subtotal=amount,
            currency="usd",
            description=line.get("description"),
            quantity=line.get("quantity", 1),
            quantity_decimal=str(line.get("quantity", 1)),
            period=dict(line.get("period") or default_period),
            metadata=dict(line.get("metadata") or {}),
            subscription=subscription,
            taxes=[],
            pricing=None
            if price is None
            else {
                "type": "price_details",
                "price_details": {"price": price, "product": line.get("product", "prod_test")},
                "unit_amount_decimal": line.get("unit_amount_decimal"),
            },
        )
        no_credit = {"credited_items": None}
        if subscription is None:
            out["parent"] = {
                "type": "invoice_item_details",
                "invoice_item_details": {
                    "invoice_item": self._new_id("ii_test"),
                    "proration": False,
                    "proration_details": no_credit,
                    "subscription": None,
                },
                "subscription_item_details": None,
            }
        else:
            out["parent"] = {
                "type": "subscription_item_details",
                "invoice_item_details": None,
                "subscription_item_details": {
                    "invoice_item": None,
                    "proration": False,
                    "proration_details": no_credit,
                    "subscription": subscription,
                    "subscription_item": line.get("subscription_item"),
                },
            }
        return out

    @staticmethod
    def _apply_invoice_status(inv: Json, at: int) -> None:
        """Derive money and timestamps from ``status`` the way Stripe reports them."""
        status = inv["status"]
        paid = inv["amount_due"] if status == "paid" else 0
        inv["amount_paid"] = paid
        inv["amount_remaining"] = inv["amount_due"] - paid
        transitions = inv["status_transitions"]
        if status != "draft":
            transitions["finalized_at"] = transitions.get("finalized_at") or at
            inv["hosted_invoice_url"] = inv.get("hosted_invoice_url") or f"https://invoice.stripe.com/i/{inv['id']}"
            inv["invoice_pdf"] = inv.get("invoice_pdf") or f"https://pay.stripe.com/invoice/{inv['id']}/pdf"
        for state, key in (("paid", "paid_at"), ("void", "voided_at"), ("uncollectible", "marked_uncollectible_at")):
            if status == state:
                transitions[key] = transitions.get(key) or at
        inv["effective_at"] = transitions.get("finalized_at")

    def event(
        self,
        event_type: str,
        obj: Mapping[str, Any],
        /,
        *,
        created: int | None = None,
        event_id: str | None = None,
        previous_attributes: Mapping[str, Any] | None = None,
    ) -> Json:
        """A webhook event wrapping a copy of ``obj``, shaped like Stripe's; sign it with :func:`sign`."""
        evt = self._fixture("event")
        evt.update(
            id=event_id or self._new_id("evt_test"),
            type=event_type,
            created=self.now if created is None else created,
            api_version=API_VERSION,
            livemode=False,
            pending_webhooks=1,
            request={"id": None, "idempotency_key": None},
            data={"object": copy.deepcopy(dict(obj))},
        )
        if previous_attributes is not None:
            evt["data"]["previous_attributes"] = copy.deepcopy(dict(previous_attributes))
        return evt

    # -- endpoint handlers -------------------------------------------------------------

    def _existing_customer(self, params: Mapping[str, str]) -> str:
        customer = params["customer"]
        if customer not in self.customers:
            raise _ApiError(400, f"No such customer: '{customer}'", code="resource_missing", param="customer")
        return customer

    def _create_customer(self, params: Mapping[str, str]) -> Json:
        fields = {key: params[key] for key in ("name", "email", "description", "phone") if key in params}
        customer = self.add_customer(metadata=_sub_dict(params, "metadata"), **fields)
        return self._render(customer, params)

    def _retrieve_customer(self, params: Mapping[str, str], obj_id: str) -> Json:
        if obj_id not in self.customers:
            raise _no_such("customer", obj_id)
        return self._render(self.customers[obj_id], params)

    def _create_checkout_session(self, params: Mapping[str, str]) -> Json:
        mode = _require(params, "mode")
        if mode not in ("payment", "setup", "subscription"):
            raise _ApiError(400, f"Invalid mode: {mode}", param="mode")
        customer = self._existing_customer(params) if "customer" in params else None
        session = self._fixture("checkout.session")
        session_id = self._new_id("cs_test_")
        session.update(
            id=session_id,
            mode=mode,
            customer=customer,
            customer_email=params.get("customer_email"),
            client_reference_id=params.get("client_reference_id"),
            success_url=params.get("success_url"),
            cancel_url=params.get("cancel_url"),
            metadata=_sub_dict(params, "metadata"),
            status="open",
            payment_status="unpaid",
            url=f"https://checkout.stripe.com/c/pay/{session_id}",
            subscription=None,
            invoice=None,
            payment_intent=None,
            created=self.now,
            expires_at=self.now + DAY,
            livemode=False,
        )
        self.checkout_sessions[session_id] = session
        self.checkout_session_params[session_id] = dict(params)
        return self._render(session, params)

    def _retrieve_checkout_session(self, params: Mapping[str, str], obj_id: str) -> Json:
        if obj_id not in self.checkout_sessions:
            raise _no_such("checkout.session", obj_id)
        return self._render(self.checkout_sessions[obj_id], params)

    def _create_portal_session(self, params: Mapping[str, str]) -> Json:
        _require(params, "customer")
        customer = self._existing_customer(params)
        session = self._fixture("billing_portal.session")
        session_id = self._new_id("bps_test")
        session.update(
            id=session_id,
            customer=customer,
            return_url=params.get("return_url"),
            url=f"https://billing.stripe.com/p/session/{session_id}",
            flow=None,
            configuration=params.get("configuration", "bpc_test_default"),
            created=self.now,
            livemode=False,
        )
        self.billing_portal_sessions[session_id] = session
        return self._render(session, params)

    def _retrieve_subscription(self, params: Mapping[str, str], obj_id: str) -> Json:
        if obj_id not in self.subscriptions:
            raise _no_such("subscription", obj_id)
        return self._render(self.subscriptions[obj_id], params)

    def _cancel_subscription(self, params: Mapping[str, str], obj_id: str) -> Json:
        """Cancel at once, as DELETE /v1/subscriptions/:id does; a canceled one cannot be canceled again."""
        if obj_id not in self.subscriptions:
            raise _no_such("subscription", obj_id)
        sub = self.subscriptions[obj_id]
        if sub["status"] in ("canceled", "incomplete_expired"):
            raise _ApiError(400, "A canceled subscription can only update its cancellation_details.")
        sub.update(
            status="canceled",
            canceled_at=self.now,
            ended_at=self.now,
            cancel_at_period_end=False,
            cancellation_details={
                "comment": params.get("cancellation_details[comment]"),
                "feedback": None,
                "reason": "cancellation_requested",
            },
        )
        return self._render(sub, params)

    def _retrieve_invoice(self, params: Mapping[str, str], obj_id: str) -> Json:
        if obj_id not in self.invoices:
            raise _no_such("invoice", obj_id)
        return self._render(self.invoices[obj_id], params)

    def _list_invoice_lines(self, params: Mapping[str, str], obj_id: str) -> Json:
        if obj_id not in self.invoices:
            raise _no_such("invoice", obj_id)
        return self._page(self.invoice_lines[obj_id], params, f"/v1/invoices/{obj_id}/lines")

    def _retrieve_payment_method(self, params: Mapping[str, str], obj_id: str) -> Json:
        if obj_id not in self.payment_methods:
            raise _no_such("PaymentMethod", obj_id)
        return self._render(self.payment_methods[obj_id], params)

    def _create_meter_event(self, params: Mapping[str, str]) -> Json:
        event_name = _require(params, "event_name")
        _require(params, "payload[stripe_customer_id]")
        value = _require(params, "payload[value]")
        if not re.fullmatch(r"\d+", value):
            raise _ApiError(
                400, f"Invalid payload value: {value!r} (expected a non-negative integer).", param="payload"
            )
        timestamp = _int_param(params, "timestamp", self.now)
        if timestamp < self.now - METER_EVENT_MAX_AGE:
            raise _ApiError(400, "Timestamp must be within the past 35 days.", param="timestamp")
        if timestamp > self.now + METER_EVENT_MAX_FUTURE:
            raise _ApiError(400, "Timestamp cannot be more than 5 minutes in the future.", param="timestamp")
        identifier = params.get("identifier") or self._new_id("mev_identifier_")
        if any(e["identifier"] == identifier for e in self.meter_events):
            # Stripe's own words, with no error code (it holds identifiers for a rolling 24 hours at least; the
            # fake, forever — stricter is safer).
            raise _ApiError(400, f"An event already exists with identifier {identifier}.", should_retry=False)
        event = self._fixture("billing.meter_event")
        event.update(
            created=self.now,
            event_name=event_name,
            identifier=identifier,
            payload=_sub_dict(params, "payload"),
            timestamp=timestamp,
            livemode=False,
        )
        self.meter_events.append(event)
        return copy.deepcopy(event)

    def _list_event_summaries(self, params: Mapping[str, str], obj_id: str) -> Json:
        """Sum the customer's events per UTC hour/day window (or one window), newest first like Stripe."""
        customer = _require(params, "customer")
        start = _int_param(params, "start_time")
        end = _int_param(params, "end_time")
        grouping = params.get("value_grouping_window")
        sizes = {"hour": HOUR, "day": DAY}
        if grouping is not None and grouping not in sizes:
            raise _ApiError(400, f"Invalid value_grouping_window: {grouping}", param="value_grouping_window")
        # Windows must start and end on their own boundaries: minutes without grouping, whole UTC hours for
        # hour, UTC midnights for day.
        alignment = sizes.get(grouping or "", 60)
        unit = {HOUR: "hour", DAY: "day (UTC midnight)"}.get(alignment, "minute")
        for name, value in (("start_time", start), ("end_time", end)):
            if value % alignment:
                raise _ApiError(400, f"{name} must be aligned with {unit} boundaries.", param=name)
        if end <= start:
            raise _ApiError(400, "end_time must be after start_time.", param="end_time")
        windows: dict[tuple[int, int], int] = {}
        if grouping is None:
            windows[(start, end)] = 0
        for event in self.meter_events:
            ts = event["timestamp"]
            if event["payload"].get("stripe_customer_id") != customer or not start <= ts < end:
                continue
            if grouping is None:
                window = (start, end)
            else:
                size = sizes[grouping]
                bucket = ts - ts % size
                window = (max(bucket, start), min(bucket + size, end))
            windows[window] = windows.get(window, 0) + int(event["payload"]["value"])
        summaries = []
        for (win_start, win_end), total in sorted(windows.items(), reverse=True):
            summary = self._fixture("billing.meter_event_summary")
            summary.update(
                id=f"mtrusg_test_{win_start}_{win_end}",
                meter=obj_id,
                start_time=win_start,
                end_time=win_end,
                aggregated_value=total,
                livemode=False,
            )
            summaries.append(summary)
        return self._page(summaries, params, f"/v1/billing/meters/{obj_id}/event_summaries")


@contextmanager
def fake_stripe(**kwargs: Any) -> Iterator[FakeStripe]:
    """Run a block against a fresh :class:`FakeStripe`; keyword arguments go to its constructor."""
    with FakeStripe(**kwargs) as fake:
        yield fake
