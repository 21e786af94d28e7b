"""The ``routing:`` section of centre.yaml: who is told about an alert, and through which channels.

```yaml
routing:
  groups:                              # recipient groups, as the gateways' rules name them
    property-office: {users: [duty-wang], channels: [console, "webhook:sms", email]}
    sunny-court/volunteers: {channels: [console, "webhook:wechat"]}   # one site's group only
    "*": {channels: [console]}          # any group not listed
  webhooks:
    sms: {url: "https://sms.example.net/canopy", secret_file: secrets/sms.hmac}
  email: {host: smtp.example.net, port: 587, from_address: canopy@example.net, username: canopy,
          password_file: secrets/smtp.pw}
  blind: {after: 300, groups: [property-office]}
```

A group's people are its ``users`` plus every user with a role grant scoped to that group
(``canopy-centre users grant … --scope group:NAME``).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from core.model import Id, Strict

CHANNEL_RE = re.compile(r"^(console|email|webhook:[A-Za-z0-9][A-Za-z0-9_.-]{0,63})$")
EVENTS = ("raised", "escalated", "updated", "acknowledged", "resolved")


class Webhook(Strict):
    """A JSON POST per notification, signed with HMAC-SHA256 (docs/centre.md#webhooks)."""

    url: str = Field(pattern=r"^https?://", description="where to POST (an SMS or WeChat Work gateway, …)")
    secret: str | None = Field(None, min_length=16, description="the shared HMAC key (or ${ENV}); prefer secret_file")
    secret_file: str | None = Field(None, description="file (0600) holding the shared HMAC key")
    timeout: float = Field(10.0, gt=0, le=120)
    max_attempts: int = Field(8, ge=1, le=100, description="tries before the notification is marked failed")
    backoff_initial: float = Field(2.0, gt=0, le=3600)
    backoff_max: float = Field(300.0, gt=0, le=86400)

    @model_validator(mode="after")
    def _one_secret(self) -> "Webhook":
        if (self.secret is None) == (self.secret_file is None):
            raise ValueError("give secret or secret_file (exactly one): every webhook is signed")
        return self


class Email(Strict):
    host: str
    port: int = Field(587, ge=1, le=65535)
    security: Literal["starttls", "tls", "none"] = Field("starttls", description='"none" only for a local relay')
    from_address: str = Field(pattern=r"^[^@\s]+@[^@\s]+$")
    username: str | None = None
    password_file: str | None = Field(None, description="file (0600) holding the SMTP password")
    timeout: float = Field(30.0, gt=0, le=300)
    max_attempts: int = Field(8, ge=1, le=100)
    backoff_initial: float = Field(5.0, gt=0, le=3600)
    backoff_max: float = Field(600.0, gt=0, le=86400)

    @model_validator(mode="after")
    def _login(self) -> "Email":
        if (self.username is None) != (self.password_file is None):
            raise ValueError("username and password_file go together")
        return self


class Group(Strict):
    users: list[str] = Field(default_factory=list, description="usernames, besides those granted this group")
    channels: list[str] = Field(default_factory=lambda: ["console"], description="console, email, webhook:NAME")

    @field_validator("channels")
    @classmethod
    def _channels(cls, v: list[str]) -> list[str]:
        for c in v:
            if not CHANNEL_RE.match(c):
                raise ValueError(f"channel {c!r}: write console, email or webhook:NAME")
        return v


class Blind(Strict):
    """"Site is blind": a gateway offline, or silent, for longer than ``after`` seconds."""

    after: float = Field(300.0, gt=0, le=7 * 86400, description="seconds offline or without any message "
                                                                 "(more than the gateways' state_interval)")
    sites: dict[Id, float] = Field(default_factory=dict, description="another limit for some sites")
    check_interval: float = Field(1.0, gt=0, le=60)
    groups: list[str] = Field(default_factory=lambda: ["*"], description="routing groups told")
    severity: Literal["critical", "warning", "info"] = "critical"

    def limit(self, site: str) -> float:
        return self.sites.get(site, self.after)


class RoutingConfig(Strict):
    groups: dict[str, Group] = Field(default_factory=lambda: {"*": Group()},
                                     description="group (or site/group, or * for any other) -> users and channels")
    webhooks: dict[Id, Webhook] = Field(default_factory=dict)
    email: Email | None = None
    blind: Blind = Blind()
    notify_on: list[Literal["raised", "escalated", "updated", "acknowledged", "resolved"]] = Field(
        default_factory=lambda: ["raised", "escalated", "updated"], description="alert lifecycle steps that notify")
    poll_interval: float = Field(0.5, gt=0, le=60, description="seconds between looks for new alert records")
    lookback: float = Field(600.0, gt=0, le=7 * 86400,
                            description="a new leader notifies alert records received this long before it took over")
    queue_max: int = Field(1000, ge=1, le=100_000, description="notifications held in memory per channel")

    @model_validator(mode="after")
    def _references(self) -> "RoutingConfig":
        for name, group in self.groups.items():
            for c in group.channels:
                if c.startswith("webhook:") and c[8:] not in self.webhooks:
                    raise ValueError(f"groups.{name}: {c} names no webhook (have: {', '.join(self.webhooks) or 'none'})")
                if c == "email" and self.email is None:
                    raise ValueError(f"groups.{name}: channel email needs an email: section")
        return self

    def group(self, site: str, name: str) -> Group | None:
        """The routing of group ``name`` at ``site``: ``site/name``, else ``name``, else ``*``."""
        return self.groups.get(f"{site}/{name}") or self.groups.get(name) or self.groups.get("*")


def routing_config(cfg) -> RoutingConfig:
    """The ``routing`` section of a CentreConfig, or the defaults while CentreConfig has no such field."""
    return getattr(cfg, "routing", None) or RoutingConfig()
