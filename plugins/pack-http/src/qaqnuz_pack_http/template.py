"""`{{ name }}` templates: parsing (at load) and rendering (per call).

Rendering never builds a URL by pasting raw text: a value landing in the path is percent-encoded as one
path segment (`/`, `?`, `#`, `%`, spaces and non-ASCII all encoded), query values are handed to httpx as
parameters (which encodes them), headers refuse line breaks, and a JSON body gets typed values.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import quote

import msgspec

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
EXACT = re.compile(r"\A\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}\Z")


class TemplateSyntaxError(ValueError):
    pass


class Omit(Exception):
    """A template refers to an optional argument the caller left out: leave the value out."""


def placeholders(text: str) -> list[str]:
    """The names in `text`, in order; a stray `{{` or `}}` is a syntax error."""
    rest = PLACEHOLDER.sub("", text)
    if "{{" in rest or "}}" in rest:
        raise TemplateSyntaxError("malformed placeholder; write {{ name }} with a letter or '_' first")
    return PLACEHOLDER.findall(text)


def body_placeholders(node: Any, path: str = "body") -> Iterator[tuple[str, str]]:
    """(location, name) for every placeholder in a JSON body template (keys are never templated)."""
    if isinstance(node, str):
        for name in placeholders(node):
            yield path, name
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from body_placeholders(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from body_placeholders(value, f"{path}[{index}]")


def as_text(value: Any) -> str:
    """A typed value as it appears inside a string: JSON spelling for non-strings (true, 3, 2.5)."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return msgspec.json.encode(value).decode("utf-8")


def encode_segment(value: Any) -> str:
    """One value percent-encoded for use inside a single path segment (nothing but unreserved stays)."""
    return quote(as_text(value), safe="")


def render(text: str, values: Mapping[str, Any], encode: Callable[[Any], str] = as_text) -> str:
    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise Omit(name)
        return encode(values[name])

    return PLACEHOLDER.sub(fill, text)


def render_body(node: Any, values: Mapping[str, Any]) -> Any:
    """A JSON body: a string that is exactly `{{ name }}` becomes the typed value; members (and list
    items) that refer to a left-out optional argument are left out."""
    if isinstance(node, str):
        exact = EXACT.match(node)
        if exact:
            if exact.group(1) not in values:
                raise Omit(exact.group(1))
            return values[exact.group(1)]
        return render(node, values)
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            try:
                out[key] = render_body(value, values)
            except Omit:
                continue
        return out
    if isinstance(node, list):
        items = []
        for value in node:
            try:
                items.append(render_body(value, values))
            except Omit:
                continue
        return items
    return node
