"""The API reference page: the OpenAPI schema that /api/schema/ serves, rendered by Django in the app's own layout.

Plain HTML — headings, tables, <pre> — in the app's top bar and colour schemes, so keyboard and screen-reader users
can read it and the strict CSP holds (Swagger UI needed inline styles and a page shell of its own). The schema only
changes with the code, so it is generated and turned into the page's structure once per process.

Schema text (descriptions, help texts) is never trusted as HTML: `render_text` escapes it and turns only Markdown's
inline `code` (and `* ` bullet lists, which drf-spectacular writes for enums) into markup.
"""

from __future__ import annotations

import functools
import json
import re
import shlex
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe
from django.views.decorators.http import require_safe
from drf_spectacular.settings import spectacular_settings

Schema = dict[str, Any]

HTTP_METHODS = ("get", "post", "put", "patch", "delete", "head", "options", "trace")
COMPONENT_REF = "#/components/schemas/"
# drf-spectacular's stand-ins for a nullable or blankable choice field: shown as words, not as schemas.
INLINE_ENUMS = {"NullEnum": "null", "BlankEnum": "empty string"}
JSON_MEDIA = re.compile(r"^application/(?:[\w.+-]+\+)?json$")

_CODE_SPAN = re.compile(r"`([^`\n]+)`")
_LIST_ITEM = re.compile(r"^\s*[*-]\s+")
_PATH_PARAMETER = re.compile(r"\{([^}]+)\}")


# --- schema text ------------------------------------------------------------------------------------------------


def render_inline(text: str) -> SafeString:
    """One line of schema text as HTML: `code` spans become <code>, everything else is escaped."""
    # split() with one capturing group alternates plain text (even indexes) and code-span contents (odd ones).
    parts = _CODE_SPAN.split(text)
    html = "".join(f"<code>{escape(part)}</code>" if i % 2 else escape(part) for i, part in enumerate(parts))
    return mark_safe(html)  # noqa: S308  # every part was escaped just above


def render_text(text: str | None) -> SafeString:
    """Schema text as paragraphs and bullet lists (blocks split on blank lines), each line through render_inline."""
    blocks = []
    for block in re.split(r"\n\s*\n", (text or "").strip()):
        lines = [line.strip() for line in block.splitlines() if line.strip()]
        if not lines:
            continue
        if all(_LIST_ITEM.match(line) for line in lines):
            items = "".join(f"<li>{render_inline(_LIST_ITEM.sub('', line))}</li>" for line in lines)
            blocks.append(f"<ul>{items}</ul>")
        else:
            blocks.append(f"<p>{render_inline(' '.join(lines))}</p>")
    return mark_safe("".join(blocks))  # noqa: S308  # built from render_inline's escaped output only


# --- types --------------------------------------------------------------------------------------------------------


def schema_anchor(name: str) -> str:
    return "schema-" + re.sub(r"[^A-Za-z0-9_-]", "-", name)


def _ref_name(ref: str) -> str:
    return ref.removeprefix(COMPONENT_REF)


def _resolve(schema: Schema, components: dict[str, Schema]) -> Schema:
    """Follow a `$ref` (or drf-spectacular's single-member allOf around one) to the component it names."""
    for _ in range(10):  # a reference to a reference is rare; a loop is a broken schema, not a reason to hang
        if "$ref" in schema:
            schema = components.get(_ref_name(schema["$ref"]), {})
        elif len(schema.get("allOf", ())) == 1:
            schema = schema["allOf"][0]
        else:
            break
    return schema


def _type_html(schema: Schema) -> str:
    """A schema's type in a few words, with component schemas linked to the Schemas section. Returns escaped HTML."""
    if "$ref" in schema:
        name = _ref_name(schema["$ref"])
        if name in INLINE_ENUMS:
            return escape(INLINE_ENUMS[name])
        text = f'<a href="#{escape(schema_anchor(name))}">{escape(name)}</a>'
    elif "allOf" in schema:
        text = " and ".join(_type_html(member) for member in schema["allOf"])
    elif "oneOf" in schema or "anyOf" in schema:
        text = " or ".join(_type_html(member) for member in schema.get("oneOf") or schema["anyOf"])
    else:
        kind = schema.get("type")
        if isinstance(kind, list):  # OpenAPI 3.1: ["string", "null"]
            text = " or ".join(_type_html({**schema, "type": k}) for k in kind)
        elif kind == "array":
            items = schema.get("items")
            text = "array of " + _type_html(items) if isinstance(items, dict) and items else "array"
        elif kind == "object" or (kind is None and "properties" in schema):
            values = schema.get("additionalProperties")
            text = "object of " + _type_html(values) if isinstance(values, dict) and values else "object"
        elif kind is None:
            text = "any"
        else:
            text = escape(kind) + (f" ({escape(schema['format'])})" if schema.get("format") else "")
    return text + (" or null" if schema.get("nullable") else "")


def type_html(schema: Schema) -> SafeString:
    return mark_safe(_type_html(schema))  # noqa: S308  # _type_html escapes every piece of schema text


def enum_values(schema: Schema, components: dict[str, Schema]) -> tuple[str, ...]:
    """The allowed values of an enum (through references and oneOf), as they are written in JSON; null left out."""
    schema = _resolve(schema, components)
    if "enum" in schema:
        return tuple(v if isinstance(v, str) and v else json.dumps(v) for v in schema["enum"] if v is not None)
    members = schema.get("oneOf") or schema.get("anyOf") or ()
    return tuple(value for member in members for value in enum_values(member, components))


def constraints(schema: Schema) -> str:
    """Limits worth knowing before sending a value: length, range, pattern, default."""
    found = []
    shortest, longest = schema.get("minLength", 0), schema.get("maxLength")
    if longest is not None:
        found.append(f"{shortest}–{longest} characters" if shortest else f"at most {longest} characters")
    elif shortest > 1:  # 1 is DRF's "not blank", which the type already implies for a required field
        found.append(f"at least {shortest} characters")
    if "minimum" in schema and "maximum" in schema:
        found.append(f"{schema['minimum']}–{schema['maximum']}")
    elif "minimum" in schema:
        found.append(f"≥ {schema['minimum']}")
    elif "maximum" in schema:
        found.append(f"≤ {schema['maximum']}")
    if "pattern" in schema:
        found.append(f"pattern {schema['pattern']}")
    if "default" in schema:
        found.append(f"default {json.dumps(schema['default'])}")
    if "maxItems" in schema:
        found.append(f"at most {schema['maxItems']} items")
    return "; ".join(found)


# --- the page's structure -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    """A property of an object schema, or a parameter (location set)."""

    name: str
    type: SafeString
    required: bool
    description: SafeString
    enum: tuple[str, ...] = ()
    constraints: str = ""
    read_only: bool = False
    location: str = ""


@dataclass(frozen=True)
class RequestBody:
    media_type: str
    type: SafeString
    required: bool
    description: SafeString
    fields: tuple[Field, ...]


@dataclass(frozen=True)
class ResponseDoc:
    status: str
    description: SafeString
    media_type: str
    type: SafeString


@dataclass(frozen=True)
class SecurityScheme:
    key: str
    label: str  # what a client sends, e.g. "Authorization: Bearer gmt_…"
    token: str  # the token to show in examples ("gmt_…"); empty when the scheme is not a bearer token
    description: SafeString


@dataclass(frozen=True)
class Operation:
    anchor: str
    method: str
    path: str
    summary: str
    description: SafeString
    deprecated: bool
    parameters: tuple[Field, ...]
    body: RequestBody | None
    responses: tuple[ResponseDoc, ...]
    security: tuple[SecurityScheme, ...]
    anonymous: bool  # callable without credentials too
    curl: str

    @property
    def method_class(self) -> str:
        return "http-method-" + self.method.lower()

    @property
    def path_html(self) -> SafeString:
        """The path with a line-break opportunity after each slash, so a narrow screen wraps it between segments."""
        return mark_safe("/<wbr>".join(escape(segment) for segment in self.path.split("/")))  # noqa: S308  # escaped


@dataclass(frozen=True)
class TagGroup:
    name: str
    anchor: str
    description: SafeString
    operations: tuple[Operation, ...]


@dataclass(frozen=True)
class SchemaDoc:
    name: str
    anchor: str
    type: SafeString
    description: SafeString
    fields: tuple[Field, ...]
    enum: tuple[str, ...]


@dataclass(frozen=True)
class ApiReference:
    title: str
    version: str
    description: SafeString
    security_schemes: tuple[SecurityScheme, ...]
    groups: tuple[TagGroup, ...]
    schemas: tuple[SchemaDoc, ...]

    @property
    def operations(self) -> tuple[Operation, ...]:
        return tuple(op for group in self.groups for op in group.operations)


def _listed_values(description: str | None, schema: Schema, components: dict[str, Schema]) -> tuple[str, ...]:
    """An enum's values, unless the description lists them already (drf-spectacular adds "* `value` - label")."""
    values = enum_values(schema, components)
    return () if values and all(f"`{value}`" in (description or "") for value in values) else values


def _fields(schema: Schema, components: dict[str, Schema]) -> tuple[Field, ...]:
    obj = _resolve(schema, components)
    required = set(obj.get("required", ()))
    return tuple(
        Field(
            name=name,
            type=type_html(prop),
            required=name in required,
            description=render_text(prop.get("description")),
            enum=_listed_values(prop.get("description"), prop, components),
            constraints=constraints(prop),
            read_only=bool(prop.get("readOnly")),
        )
        for name, prop in obj.get("properties", {}).items()
    )


def _parameter(parameter: Schema, components: dict[str, Schema]) -> Field:
    schema = parameter.get("schema") or {}
    return Field(
        name=parameter["name"],
        type=type_html(schema),
        required=bool(parameter.get("required")),
        description=render_text(parameter.get("description")),
        enum=_listed_values(parameter.get("description"), schema, components),
        constraints=constraints(schema),
        location=parameter.get("in", ""),
    )


def _security_scheme(key: str, scheme: Schema) -> SecurityScheme:
    kind, token = scheme.get("type"), ""
    if kind == "http" and scheme.get("scheme", "").lower() == "bearer":
        # "gmt_<id>_<secret>" → "gmt_…": the prefix tells which kind of credential an operation takes.
        bearer_format = scheme.get("bearerFormat", "")
        token = bearer_format.split("<")[0] + "…" if "<" in bearer_format else "TOKEN"
        label = f"Authorization: Bearer {token}"
    elif kind == "http":
        label = f"Authorization: {scheme.get('scheme', '').capitalize()} …"
    elif kind == "apiKey" and scheme.get("in") == "cookie":
        label = f"Cookie: {scheme.get('name', '')}=…"
    elif kind == "apiKey":
        label = f"{scheme.get('name', '')} ({scheme.get('in', '')})"
    else:
        label = key
    # drf-spectacular describes DRF's session authentication as a cookie without a description.
    session = kind == "apiKey" and scheme.get("in") == "cookie"
    description = scheme.get("description") or ("A signed-in browser session." if session else "")
    return SecurityScheme(key=key, label=label, token=token, description=render_text(description))


def _example_value(schema: Schema, components: dict[str, Schema], depth: int = 0) -> Any:
    """A placeholder value of the right JSON type, for the curl example's body."""
    resolved = _resolve(schema, components)
    for source in (schema, resolved):  # a property's own default sits beside the reference to its enum
        if "example" in source:
            return source["example"]
        if "default" in source:
            return source["default"]
    schema = resolved
    values = [value for value in schema.get("enum", ()) if value is not None]
    if values:
        return values[0]
    if schema.get("oneOf") or schema.get("anyOf"):
        return _example_value((schema.get("oneOf") or schema["anyOf"])[0], components, depth)
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        return _example_object(schema, components, depth + 1) if depth < 3 else {}
    if kind == "array":
        return []
    if kind == "boolean":
        return True
    if kind in ("integer", "number"):
        return schema.get("minimum", 1)
    return {"email": "someone@example.com", "date-time": "2025-01-31T12:00:00Z", "uri": "https://example.com/"}.get(
        schema.get("format", ""), "…"
    )


def _example_object(schema: Schema, components: dict[str, Schema], depth: int = 0) -> dict[str, Any]:
    """The required properties (or, when none is, the first one: a PATCH changes one field at a time)."""
    obj = _resolve(schema, components)
    properties = obj.get("properties", {})
    names = [name for name in properties if name in set(obj.get("required", ()))] or list(properties)[:1]
    return {name: _example_value(properties[name], components, depth) for name in names}


def _reason(status: str) -> str:
    """HTTP's own name for a status, for responses the schema leaves undescribed."""
    try:
        return HTTPStatus(int(status)).phrase + "."
    except ValueError:  # "default", "2XX"
        return ""


def _placeholder(name: str) -> str:
    # Upper-case words, not {braces}: curl would read {team_slug} as a URL glob.
    return re.sub(r"\W+", "_", name).upper()


def _curl(
    *,
    site_url: str,
    method: str,
    path: str,
    parameters: tuple[Field, ...],
    token: str,
    media_type: str | None = None,
    body: Any = None,
) -> str:
    """A copyable curl command: method, path, required parameters, the credential and (for writes) a body."""
    url = site_url + _PATH_PARAMETER.sub(lambda m: _placeholder(m.group(1)), path)
    query = [f"{p.name}={_placeholder(p.name)}" for p in parameters if p.location == "query" and p.required]
    if query:
        url += "?" + "&".join(query)
    lines = [f'curl {"" if method == "GET" else f"-X {method} "}"{url}"']
    if token:
        lines.append(f'-H "Authorization: Bearer {token}"')
    lines += [f'-H "{p.name}: {_placeholder(p.name)}"' for p in parameters if p.location == "header" and p.required]
    if media_type is not None:
        lines.append(f'-H "Content-Type: {media_type}"')
        if JSON_MEDIA.match(media_type):
            lines.append(f"-d {shlex.quote(json.dumps(body, ensure_ascii=False))}")
        else:
            lines.append("--data-binary @FILE")
    return " \\\n  ".join(lines)


def _operation(
    *,
    path: str,
    method: str,
    spec: Schema,
    components: dict[str, Schema],
    schemes: dict[str, SecurityScheme],
    site_url: str,
) -> Operation:
    parameters = tuple(_parameter(p, components) for p in spec.get("parameters", ()))
    body, example = None, None
    content = spec.get("requestBody", {}).get("content", {})
    if content:
        media_type = next((m for m in content if JSON_MEDIA.match(m)), next(iter(content)))
        schema = content.get(media_type, {}).get("schema", {})
        body = RequestBody(
            media_type=media_type,
            type=type_html(schema),
            required=bool(spec["requestBody"].get("required")),
            description=render_text(spec["requestBody"].get("description")),
            fields=_fields(schema, components) if JSON_MEDIA.match(media_type) else (),
        )
        example = _example_value(schema, components) if JSON_MEDIA.match(media_type) else None
    responses = []
    for status, answer in sorted(spec.get("responses", {}).items(), key=lambda item: str(item[0])):
        answer_content: dict[str, Schema] = answer.get("content", {})
        answer_media = next(iter(answer_content), "")
        answer_schema = answer_content.get(answer_media, {}).get("schema")
        responses.append(
            ResponseDoc(
                status=str(status),
                description=render_text(answer.get("description") or _reason(str(status))),
                media_type=answer_media,
                type=type_html(answer_schema) if answer_schema else SafeString(""),
            )
        )
    requirements = spec.get("security", [])
    security = tuple(schemes[key] for requirement in requirements for key in requirement if key in schemes)
    token = next((scheme.token for scheme in security if scheme.token), "")
    return Operation(
        anchor="op-" + re.sub(r"[^A-Za-z0-9_-]", "-", spec.get("operationId") or f"{method}-{path}"),
        method=method.upper(),
        path=path,
        summary=spec.get("summary", ""),
        description=render_text(spec.get("description")),
        deprecated=bool(spec.get("deprecated")),
        parameters=parameters,
        body=body,
        responses=tuple(responses),
        security=security,
        anonymous=not requirements or {} in requirements,
        curl=_curl(
            site_url=site_url,
            method=method.upper(),
            path=path,
            parameters=parameters,
            token=token,
            media_type=body.media_type if body else None,
            body=example,
        ),
    )


def build_reference(schema: Schema, *, site_url: str) -> ApiReference:
    """The page's structure from an OpenAPI 3 document: operations grouped by their first tag, then the schemas."""
    components = schema.get("components", {}).get("schemas", {})
    schemes = {
        key: _security_scheme(key, scheme)
        for key, scheme in schema.get("components", {}).get("securitySchemes", {}).items()
    }
    tag_descriptions = {tag["name"]: tag.get("description") for tag in schema.get("tags", ())}
    grouped: dict[str, list[Operation]] = {}
    for path, item in schema.get("paths", {}).items():
        for method in HTTP_METHODS:
            if method in item:
                tag = (item[method].get("tags") or ["other"])[0]
                grouped.setdefault(tag, []).append(
                    _operation(
                        path=path,
                        method=method,
                        spec=item[method],
                        components=components,
                        schemes=schemes,
                        site_url=site_url,
                    )
                )
    groups = tuple(
        TagGroup(
            name=tag,
            anchor="tag-" + re.sub(r"[^A-Za-z0-9_-]", "-", tag),
            description=render_text(tag_descriptions.get(tag)),
            operations=tuple(operations),
        )
        for tag, operations in grouped.items()
    )
    schemas = tuple(
        SchemaDoc(
            name=name,
            anchor=schema_anchor(name),
            type=mark_safe(  # noqa: S308  # escaped by _type_html; "enum" is a constant
                _type_html({k: v for k, v in component.items() if k != "nullable"})
                + (" enum" if "enum" in component else "")
            ),
            description=render_text(component.get("description")),
            fields=_fields(component, components),
            enum=enum_values(component, components),
        )
        for name, component in sorted(components.items())
        if name not in INLINE_ENUMS
    )
    info = schema.get("info", {})
    return ApiReference(
        title=info.get("title", "API"),
        version=str(info.get("version", "")),
        description=render_text(info.get("description")),
        security_schemes=tuple(sorted(schemes.values(), key=lambda scheme: not scheme.token)),  # tokens first
        groups=groups,
        schemas=schemas,
    )


@functools.cache
def api_reference(site_url: str) -> ApiReference:
    """The reference for this process's code: the schema /api/schema/ serves, generated once (it takes a while)."""
    generator = spectacular_settings.DEFAULT_GENERATOR_CLASS()
    # No request: the result must not depend on who asked first; public, as /api/schema/ serves it (SERVE_PUBLIC).
    schema = generator.get_schema(request=None, public=spectacular_settings.SERVE_PUBLIC)
    return build_reference(schema, site_url=site_url)


@require_safe
def api_docs(request: HttpRequest) -> HttpResponse:
    """The API reference page: public, like the schema it renders."""
    return render(request, "api_docs.html", {"api": api_reference(settings.SITE_URL)})
