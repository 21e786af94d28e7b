"""Roles, what each may do, and whether a user's grants cover one thing at one place (pure functions).

A user holds *grants*: a role within a scope.  The role says **what** (the permissions in
:data:`PERMISSIONS`); the scope says **where**: a site (``site=None``: every site), narrowed
optionally to one recipient group, household or irrigation zone.

    (duty_desk, site sunny-court)                 every alert of the site, doors, readings
    (volunteer, site sunny-court, group volunteers) only alerts that reached the volunteers group
    (farmer, site green-valley, zone 2)           irrigation of zone 2 only

How a grant matches a target (:func:`allowed`):

- the grant's role has the permission, and its site is ``None`` or the target's site;
- a whole-site grant then matches everything at that site;
- a narrowed grant matches a target that names the same dimension with that value (an
  alert's groups include the grant's group, a door's household is the grant's household,
  an irrigation zone is the grant's zone) -- or a *site-level* target (``site_level=True``:
  gateways, readings, commands), which carries no group, household or zone to narrow by.

So a target that names nothing narrower and is not site-level (``close-all`` for a site)
needs a whole-site grant.  Callers pass every dimension they know.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

VIEW_ALERTS, ACK_ALERTS, RESOLVE_ALERTS = "alerts.view", "alerts.ack", "alerts.resolve"
VIEW_GATEWAYS, VIEW_READINGS, VIEW_COMMANDS, VIEW_GAPS = "gateways.view", "readings.view", "commands.view", "gaps.view"
DOORS, IRRIGATION, CONTROLS = "doors.control", "irrigation.control", "controls.override"
MANAGE_USERS, VIEW_AUDIT, MANAGE_KEYS, MANAGE_ROUTING = "users.manage", "audit.view", "keys.manage", "routing.manage"

_ALL = frozenset({VIEW_ALERTS, ACK_ALERTS, RESOLVE_ALERTS, VIEW_GATEWAYS, VIEW_READINGS, VIEW_COMMANDS, VIEW_GAPS,
                  DOORS, IRRIGATION, CONTROLS, MANAGE_USERS, VIEW_AUDIT, MANAGE_KEYS, MANAGE_ROUTING})

PERMISSIONS: dict[str, frozenset[str]] = {
    "duty_desk": frozenset({VIEW_ALERTS, ACK_ALERTS, RESOLVE_ALERTS, DOORS, VIEW_GATEWAYS, VIEW_READINGS,
                            VIEW_COMMANDS}),
    "volunteer": frozenset({VIEW_ALERTS, ACK_ALERTS}),
    "grid_leader": frozenset({VIEW_ALERTS, ACK_ALERTS, RESOLVE_ALERTS, VIEW_GATEWAYS}),
    "farmer": frozenset({VIEW_ALERTS, ACK_ALERTS, RESOLVE_ALERTS, VIEW_GATEWAYS, VIEW_READINGS, VIEW_COMMANDS,
                         IRRIGATION, CONTROLS}),
    "installer": frozenset({VIEW_GATEWAYS, VIEW_READINGS, VIEW_COMMANDS, VIEW_GAPS}),
    "admin": _ALL,
}
ROLES = tuple(PERMISSIONS)
ACTIONS = tuple(sorted(_ALL))
SCOPE_KINDS = ("site", "group", "household", "zone")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True, slots=True)
class Grant:
    role: str
    site: str | None = None  # None: every site
    scope_kind: str = "site"  # site | group | household | zone
    scope: str | None = None  # the group, household or zone; None for a whole site

    def __str__(self) -> str:
        where = f"site {self.site}" if self.site else "every site"
        return f"{self.role} at {where}" + (f", {self.scope_kind} {self.scope}" if self.scope_kind != "site" else "")


def parse_scope(text: str) -> tuple[str, str]:
    """``group:property-office`` -> ("group", "property-office"); a clear ValueError otherwise."""
    kind, sep, value = text.partition(":")
    if not sep or kind not in SCOPE_KINDS[1:]:
        raise ValueError(f"scope {text!r}: write group:NAME, household:NAME or zone:NAME")
    if not _ID.match(value):
        raise ValueError(f"scope {text!r}: {value!r} is not an id (letters, digits, _ . -, at most 64)")
    return kind, value


def check_grant(grant: Grant) -> Grant:
    """Raise ValueError (with what to write instead) for a grant that cannot be stored."""
    if grant.role not in PERMISSIONS:
        raise ValueError(f"unknown role {grant.role!r} (roles: {', '.join(ROLES)})")
    if grant.site is not None and not _ID.match(grant.site):
        raise ValueError(f"site {grant.site!r} is not an id (letters, digits, _ . -, at most 64)")
    if grant.scope_kind not in SCOPE_KINDS or (grant.scope_kind == "site") != (grant.scope is None):
        raise ValueError(f"scope {grant.scope_kind}:{grant.scope} is not a valid scope")
    return grant


def allowed(grants: Iterable[Grant], action: str, *, site: str | None, group: str | Iterable[str] | None = None,
            household: str | None = None, zone: str | None = None, site_level: bool = False) -> str | None:
    """``None`` when some grant covers ``action`` on this target, else the reason it is refused (for the 403)."""
    grants = tuple(grants)
    groups = {group} if isinstance(group, str) else set(group or ())
    with_perm = [g for g in grants if action in PERMISSIONS.get(g.role, ())]
    if not with_perm:
        roles = ", ".join(sorted({g.role for g in grants})) or "none"
        return f"your roles ({roles}) may not {action}"
    at_site = [g for g in with_perm if g.site is None or g.site == site]
    if not at_site:
        return f"you have no role that may {action} at site {site}"
    for g in at_site:
        if g.scope_kind == "site" or site_level:
            return None
        if (g.scope_kind == "group" and g.scope in groups) or (g.scope_kind == "household" and g.scope == household) \
                or (g.scope_kind == "zone" and g.scope == zone):
            return None
    yours = ", ".join(f"{g.scope_kind} {g.scope}" for g in at_site)
    theirs = ", ".join(filter(None, [f"groups {', '.join(sorted(groups))}" if groups else "",
                                     f"household {household}" if household else "", f"zone {zone}" if zone else ""]))
    return f"{action} at site {site} is outside your scope ({yours}); this is for {theirs or 'the whole site'}"


def sites_for(grants: Iterable[Grant], action: str) -> set[str] | None:
    """The sites where some grant has ``action`` (any scope); ``None`` means every site."""
    sites: set[str] = set()
    for g in grants:
        if action in PERMISSIONS.get(g.role, ()):
            if g.site is None:
                return None
            sites.add(g.site)
    return sites
