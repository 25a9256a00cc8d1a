"""`[plugins.otel]`: where traces go, what rides along with them, and how many are kept.

Validated without importing OpenTelemetry (the command line loads every plugin's entry module), with every
problem reported at once, located, and saying how to fix it. No message here ever repeats a header value or
the endpoint: an operator may have pasted a credential into either, and these messages reach the logs.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import msgspec

from qaqnuz import ConfigError, Secret, SecretRef, parse_positive_duration


class OtelSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    #: The OTLP/HTTP traces endpoint, the whole URL with its path (a collector's default is /v1/traces).
    endpoint: str = "http://127.0.0.1:4318/v1/traces"
    #: Headers sent with every export; a value is a string or a secret reference ({ env } or { file }). Typed as
    #: a plain table, turned into a `SecretRef` by `check`: the kernel's settings decoder reads a table of
    #: structs only when every value in it is one, and a header table mixes both.
    headers: dict[str, str | dict[str, str]] = msgspec.field(default_factory=dict)
    #: How long one export may take, retries included, before that batch is dropped.
    timeout: str = "10s"
    #: `service.name` of the traces; the server's `[server] name` when not given.
    service_name: str | None = None
    #: The share of requests traced (0 to 1), decided per trace id; a sampled parent is always followed.
    sample_ratio: float = 1.0


@dataclass(frozen=True)
class Options:
    """The validated settings, the timeout in seconds and every header value resolved."""

    endpoint: str
    timeout: float
    service_name: str | None
    sample_ratio: float
    headers: Mapping[str, Secret] = field(default_factory=dict, repr=False)


#: RFC 9110 `token`: what a header name may be made of.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: Header names whose value is a credential wherever it is sent: only a secret reference may give it, so a
#: token cannot land in the config file (and from there in a repository or a backup) by accident.
_CREDENTIAL = re.compile(r"authorization|cookie|(^|[-_])(api[-_]?key|key|token|secret|password|auth)([-_]|$)", re.I)

Resolve = Callable[[SecretRef, str], Secret]


def check(settings: OtelSettings, where: str, resolve: Resolve) -> tuple[Options | None, list[str]]:
    """The options, or None and every problem found (each located at `where`)."""
    problems: list[str] = []
    _endpoint(settings.endpoint, where, problems)
    try:
        timeout = parse_positive_duration(settings.timeout)
    except ValueError as exc:
        problems.append(f"{where} timeout: {exc}")
        timeout = 0.0
    ratio = settings.sample_ratio
    if not (math.isfinite(ratio) and 0.0 <= ratio <= 1.0):
        problems.append(f"{where} sample_ratio: must be a number from 0 to 1 (1 traces every request)")
    if settings.service_name is not None and not settings.service_name.strip():
        problems.append(f"{where} service_name: must not be empty; leave it out to use [server] name")
    headers = _headers(settings.headers, where, resolve, problems)
    if problems:
        return None, problems
    options = Options(
        endpoint=settings.endpoint.strip(),
        timeout=timeout,
        service_name=settings.service_name.strip() if settings.service_name is not None else None,
        sample_ratio=float(ratio),
        headers=headers,
    )
    return options, problems


def _endpoint(url: str, where: str, problems: list[str]) -> None:
    shape = "write it as http://host:4318/v1/traces (or https://)"
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number from 0 to 65535
    except ValueError:
        problems.append(f"{where} endpoint: not a valid URL (or its port is not a number); {shape}")
        return
    if parts.scheme not in ("http", "https"):
        problems.append(f"{where} endpoint: must start with http:// or https:// (OTLP over HTTP); {shape}")
    elif parts.username is not None or parts.password is not None:
        problems.append(
            f"{where} endpoint: must not carry a user or password; send the credential as a header instead: "
            f'headers = {{ authorization = {{ env = "NAME" }} }}'
        )
    elif parts.query or parts.fragment:
        problems.append(
            f"{where} endpoint: takes no '?' or '#' part (the exporter's error messages repeat the URL); "
            f"send credentials as headers"
        )
    elif not parts.hostname:
        problems.append(f"{where} endpoint: names no host; {shape}")


def _headers(
    raw: Mapping[str, str | Mapping[str, str]], where: str, resolve: Resolve, problems: list[str]
) -> dict[str, Secret]:
    """Each header's value, resolved now; a problem names the header, never its value."""
    headers: dict[str, Secret] = {}
    seen: set[str] = set()
    for name, value in raw.items():
        at = f"{where} headers.{name}" if _TOKEN.fullmatch(name) else f"{where} headers"
        if not _TOKEN.fullmatch(name):
            problems.append(f"{at}: a header name is letters, digits and !#$%&'*+-.^_`|~ only")
            continue
        if name.lower() in seen:
            problems.append(f"{at}: given twice (header names are case-insensitive)")
            continue
        seen.add(name.lower())
        if not isinstance(value, str):
            try:
                ref = msgspec.convert(value, SecretRef)
            except msgspec.ValidationError:
                problems.append(f'{at}: a secret reference is {{ env = "NAME" }} or {{ file = "path" }}, nothing else')
                continue
            try:
                secret = resolve(ref, at)
            except ConfigError as exc:  # located at `at` by the resolver
                problems.extend(exc.problems)
                continue
        elif _CREDENTIAL.search(name):
            problems.append(
                f'{at}: carries a credential, so give it by reference: {name} = {{ env = "NAME" }} '
                f'(or {{ file = "path" }}); never the value itself in the config file'
            )
            continue
        else:
            secret = Secret(value)
        if any(ch in secret.reveal() for ch in "\r\n\0"):
            problems.append(f"{at}: the value must be one line (no line breaks)")
            continue
        headers[name] = secret
    return headers
