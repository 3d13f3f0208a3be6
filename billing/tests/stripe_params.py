"""Check every request the app sends to Stripe against stripe-python's generated parameter types.

stripe-python 16 ships a TypedDict for the parameters of every API method, generated from Stripe's OpenAPI
specification. The fake decodes each form-encoded request back into its nested shape and checks it against the
method's TypedDict: an unknown or misspelled parameter, a missing required one, a value outside an enum or of the
wrong type is answered as Stripe answers it (400 invalid_request_error), so the test that sent it fails.
"""

from __future__ import annotations

import re
import sys
import typing
from collections.abc import Mapping
from functools import cache
from typing import Any

import stripe.params as top
import stripe.params.billing as billing
import stripe.params.billing_portal as billing_portal
import stripe.params.checkout as checkout
import typing_extensions
from stripe._request_options import RequestOptions

# (method, path pattern) → the parameters' TypedDict, for every endpoint the app calls.
ENDPOINTS: list[tuple[str, re.Pattern[str], type]] = [
    ("POST", re.compile(r"/v1/customers"), top.CustomerCreateParams),
    ("GET", re.compile(r"/v1/customers/[^/]+"), top.CustomerRetrieveParams),
    ("POST", re.compile(r"/v1/checkout/sessions"), checkout.SessionCreateParams),
    ("GET", re.compile(r"/v1/checkout/sessions/[^/]+"), checkout.SessionRetrieveParams),
    ("POST", re.compile(r"/v1/billing_portal/sessions"), billing_portal.SessionCreateParams),
    ("GET", re.compile(r"/v1/subscriptions/[^/]+"), top.SubscriptionRetrieveParams),
    ("DELETE", re.compile(r"/v1/subscriptions/[^/]+"), top.SubscriptionCancelParams),
    ("GET", re.compile(r"/v1/invoices/[^/]+"), top.InvoiceRetrieveParams),
    ("GET", re.compile(r"/v1/invoices/[^/]+/lines"), top.InvoiceLineItemListParams),
    ("GET", re.compile(r"/v1/payment_methods/[^/]+"), top.PaymentMethodRetrieveParams),
    ("POST", re.compile(r"/v1/billing/meter_events"), billing.MeterEventCreateParams),
    ("GET", re.compile(r"/v1/billing/meters/[^/]+/event_summaries"), billing.MeterEventSummaryListParams),
]
CLIENT_OPTIONS = frozenset(RequestOptions.__annotations__)  # idempotency_key & co. travel as headers, not params


class InvalidParamsError(ValueError):
    """What Stripe would refuse, in its words."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


def params_type(method: str, path: str) -> type | None:
    for endpoint_method, pattern, params in ENDPOINTS:
        if endpoint_method == method and pattern.fullmatch(path):
            return params
    return None


def unflatten(flat: Mapping[str, str]) -> dict[str, Any]:
    """`line_items[0][price]=x` → {"line_items": {"0": {"price": "x"}}} (lists stay index-keyed dicts here)."""
    tree: dict[str, Any] = {}
    for key, value in flat.items():
        parts = re.findall(r"^[^\[]+|\[([^\]]*)\]", key)
        names = [key.split("[", 1)[0], *parts[1:]]
        node = tree
        for name in names[:-1]:
            node = node.setdefault(name, {})
            if not isinstance(node, dict):
                raise InvalidParamsError(f"Invalid parameter: {key}", key)
        node[names[-1]] = value
    return tree


@cache
def _hints(typed_dict: type) -> dict[str, Any]:
    """The TypedDict's fields and their types, forward references resolved in its module (client options left out:
    their annotations name types the params modules do not import)."""
    namespace = {**vars(typing), **vars(typing_extensions), **vars(sys.modules[typed_dict.__module__])}
    hints = {}
    for name, annotation in typed_dict.__annotations__.items():
        if name in CLIENT_OPTIONS:
            continue
        if isinstance(annotation, str):
            annotation = typing.ForwardRef(annotation)
        # typing's private evaluator (no stub): get_type_hints resolves a whole class, not one annotation in a namespace
        resolved = typing._eval_type(annotation, namespace, namespace)  # type: ignore[attr-defined]
        while typing.get_origin(resolved) in (typing_extensions.NotRequired, typing_extensions.Required):
            (resolved,) = typing.get_args(resolved)
        hints[name] = resolved
    return hints


def check(params_class: type, flat: Mapping[str, str]) -> None:
    """Raise InvalidParamsError unless the request's parameters fit `params_class` (a stripe-python TypedDict)."""
    _check_typed_dict(params_class, unflatten(flat), "", top_level=True)


def _check_typed_dict(cls: type, value: Any, where: str, *, top_level: bool = False) -> None:
    if not isinstance(value, dict):
        raise InvalidParamsError(f"Invalid object: {where or 'the body'} must be an object.", where)
    hints = _hints(cls)
    allowed = set(hints) - (CLIENT_OPTIONS if top_level else set())
    for name in value:
        if name not in allowed:
            raise InvalidParamsError(f"Received unknown parameter: {_join(where, name)}", _join(where, name))
    for name in getattr(cls, "__required_keys__", ()):
        if name not in value and not (top_level and name in CLIENT_OPTIONS):
            raise InvalidParamsError(f"Missing required param: {_join(where, name)}.", _join(where, name))
    for name, item in value.items():
        _check_value(hints[name], item, _join(where, name))


def _join(where: str, name: str) -> str:
    return f"{where}[{name}]" if where else name


def _check_value(expected: Any, value: Any, where: str) -> None:
    origin = typing.get_origin(expected)
    args = typing.get_args(expected)
    if origin is typing.Union or type(expected).__name__ == "UnionType":
        errors = []
        for option in args:
            try:
                _check_value(option, value, where)
            except InvalidParamsError as error:
                errors.append(error)
            else:
                return
        raise errors[0]
    if origin is typing.Literal:
        if value not in [str(arg) for arg in args]:
            raise InvalidParamsError(f"Invalid {where}: must be one of {', '.join(map(str, args))}", where)
        return
    if origin in (list, list):
        if not isinstance(value, dict) or not all(k.isdigit() for k in value):
            raise InvalidParamsError(f"Invalid array: {where}", where)
        for index, item in value.items():
            _check_value(args[0], item, f"{where}[{index}]")
        return
    if (
        origin in (dict, dict)
        or getattr(expected, "__name__", "") == "UntypedStripeObject"
        or (origin is not None and getattr(origin, "__name__", "") == "UntypedStripeObject")
    ):
        if not isinstance(value, dict) or any(isinstance(v, dict) for v in value.values()):
            raise InvalidParamsError(f"Invalid hash: {where}", where)
        return
    if isinstance(expected, type) and typing_extensions.is_typeddict(expected):
        _check_typed_dict(expected, value, where)
        return
    if isinstance(value, dict):
        raise InvalidParamsError(f"Invalid {where}: expected a value, got an object", where)
    if expected is bool and value not in ("true", "false"):
        raise InvalidParamsError(f"Invalid boolean: {value}", where)
    if expected is int and not re.fullmatch(r"-?\d+", value):
        raise InvalidParamsError(f"Invalid integer: {value}", where)
    if expected is float and not re.fullmatch(r"-?\d+(\.\d+)?", value):
        raise InvalidParamsError(f"Invalid decimal: {value}", where)
