"""`[plugins.slack]`: where Slack is, the bot token and signing secrets (by reference only), and per brand
the channel its requests go to and who may decide them.

One struct serves both the approver and the `/slack` web route (the kernel decodes `[plugins.slack]` with
each), so both see the same brands. Every problem is reported at once, located with `ctx.where`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import msgspec

from qaqnuz import ApproverContext, ConfigError, Secret, SecretRef, WebRouteContext, parse_positive_duration

_USER_ID = re.compile(r"[UW][A-Z0-9]{2,}")
_CHANNEL_ID = re.compile(r"[CGD][A-Z0-9]{2,}")
_GROUP_ID = re.compile(r"S[A-Z0-9]{2,}")


class BrandSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    #: The channel id (C..., G...) this brand's approval requests are posted to.
    channel: str
    #: Slack user ids (U...) who may approve or deny this brand's requests.
    approvers: list[str] = msgspec.field(default_factory=list)
    #: Slack user group ids (S...) whose members may approve or deny too (needs the `usergroups:read` scope).
    approver_groups: list[str] = msgspec.field(default_factory=list)
    #: Key name -> Slack user id of the person the key belongs to (they may not approve their own calls).
    users: dict[str, str] = msgspec.field(default_factory=dict)


class SlackSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    #: The bot token (xoxb-...), by reference only: { env = "NAME" } or { file = "path" }.
    bot_token: SecretRef | None = None
    #: Signing secrets that verify interaction requests; two during a rotation (old and new).
    signing_secrets: list[SecretRef] = msgspec.field(default_factory=list)
    #: Slack's Web API base URL (tests point it at a local fake Slack).
    base_url: str = "https://slack.com/api"
    #: How long one Web API request may take.
    timeout: str = "5s"
    #: Attempts to post or update one message before giving up (429, 5xx, timeouts, network errors).
    attempts: int = 6
    #: The first retry's delay; each later one doubles it (a 429's Retry-After wins when longer).
    backoff: str = "1s"
    #: Where posted messages are remembered (SQLite; relative to the config file's folder).
    state_file: str = "qaqnuz-slack.db"
    #: Per brand: `[plugins.slack.brands.<brand>]`.
    brands: dict[str, BrandSettings] = msgspec.field(default_factory=dict)


@dataclass(frozen=True)
class Options:
    """The validated settings, durations in seconds, secrets resolved (their repr shows nothing)."""

    base_url: str
    timeout: float
    attempts: int
    backoff: float
    brands: dict[str, BrandSettings]
    state_file: str
    bot_token: Secret = field(repr=False)
    signing_secrets: tuple[Secret, ...] = field(repr=False)


def load(settings: SlackSettings, ctx: ApproverContext | WebRouteContext) -> Options:
    """Validate everything and resolve the secrets now; all problems raised together as one ConfigError."""
    where = ctx.where
    problems: list[str] = []
    url = urlsplit(settings.base_url)
    if url.scheme not in ("https", "http") or not url.netloc:
        problems.append(f"{where} base_url: must be an http(s) URL like https://slack.com/api")
    durations: dict[str, float] = {"timeout": 5.0, "backoff": 1.0}
    for name in ("timeout", "backoff"):
        try:
            durations[name] = parse_positive_duration(getattr(settings, name))
        except (ValueError, ConfigError):
            problems.append(f'{where} {name}: not a positive duration like "5s" or "500ms"')
    if not settings.state_file:
        problems.append(f'{where} state_file: must name a file, e.g. "qaqnuz-slack.db"')
    if not 1 <= settings.attempts <= 20:
        problems.append(f"{where} attempts: must be between 1 and 20")
    if settings.bot_token is None:
        problems.append(f'{where} bot_token: missing; set bot_token = {{ env = "SLACK_BOT_TOKEN" }}')
    if not 1 <= len(settings.signing_secrets) <= 2:
        problems.append(
            f'{where} signing_secrets: give one (or two during a rotation), e.g. [{{ env = "SLACK_SIGNING_SECRET" }}]'
        )
    channels: dict[str, str] = {}
    for brand, cfg in settings.brands.items():
        at = f"[{ctx.section}.brands.{brand}]"
        if cfg.channel in channels:
            problems.append(
                f"{at} channel: {cfg.channel} is brand {channels[cfg.channel]}'s too; each brand needs a channel of "
                f"its own (its people must never see another brand's requests)"
            )
        channels.setdefault(cfg.channel, brand)
        if not _CHANNEL_ID.fullmatch(cfg.channel):
            problems.append(f"{at} channel: {cfg.channel!r} is not a Slack channel id (C..., G...)")
        if not cfg.approvers and not cfg.approver_groups:
            problems.append(
                f'{at} approvers: nobody could decide; list Slack user ids, e.g. ["U012ABCDEF"], or user groups '
                f'in approver_groups, e.g. ["S012ABCDEF"]'
            )
        for group in cfg.approver_groups:
            if not _GROUP_ID.fullmatch(group):
                problems.append(f"{at} approver_groups: {group!r} is not a Slack user group id (S...)")
        for user in [*cfg.approvers, *cfg.users.values()]:
            if not _USER_ID.fullmatch(user):
                problems.append(f"{at}: {user!r} is not a Slack user id (U...)")
    resolver = ctx.secret  # masked in the kernel's logs once resolved
    token = Secret("")
    if settings.bot_token is not None:
        try:
            token = resolver(settings.bot_token, f"{where} bot_token")
        except ConfigError as exc:
            problems.extend(exc.problems)
    secrets: list[Secret] = []
    for index, ref in enumerate(settings.signing_secrets):
        try:
            secrets.append(resolver(ref, f"{where} signing_secrets[{index}]"))
        except ConfigError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ConfigError(problems)
    return Options(
        base_url=settings.base_url.rstrip("/"),
        timeout=durations["timeout"],
        attempts=settings.attempts,
        backoff=durations["backoff"],
        brands=dict(settings.brands),
        state_file=ctx.resolve(settings.state_file),
        bot_token=token,
        signing_secrets=tuple(secrets),
    )
