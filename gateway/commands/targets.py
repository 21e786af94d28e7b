"""What commands act on: the actions by kind of target, where targets are, and whom an issuer may command.

Shared by the config (its shapes and checks), the intake (authorisation), the
alert acks and the remote config (an issuer's key), so it imports none of them.
"""

from __future__ import annotations

import fnmatch
import os

ACTIONS = ("irrigate", "close", "close_all", "resume_programs", "unlock", "lock", "reset_lockout", "override")
VALVE_ACTIONS = frozenset({"irrigate", "close"})
LOCK_ACTIONS = frozenset({"unlock", "lock", "reset_lockout"})
CONTROL_ACTIONS = frozenset({"override"})  # target: a control id of the site's `controls:`
SITE_ACTIONS = frozenset({"close_all", "resume_programs"})  # target "*"


def device_locations(site) -> dict[str, dict]:
    """device id -> its location fields that are set (authorisation by building, lock-out alarms)."""
    out = {}
    for bus in site.buses:
        for dev in bus.devices:
            loc = getattr(dev, "location", None)
            out[dev.id] = loc.model_dump(exclude_none=True) if loc is not None else {}
    return out


def resolve_key_text(issuer, base_dir: str) -> str:
    """The public key text of an IssuerConfig: inline, or read from its file (relative to the config)."""
    if issuer.public_key is not None:
        return issuer.public_key
    path = issuer.public_key_file if os.path.isabs(issuer.public_key_file) else os.path.join(base_dir, issuer.public_key_file)
    with open(path, encoding="utf-8") as f:
        return f.read()


def target_allowed(issuer, target_id: str, location: dict) -> bool:
    """Whether an IssuerConfig's targets (globs) or buildings cover this target."""
    if any(fnmatch.fnmatchcase(target_id, pattern) for pattern in issuer.targets):
        return True
    building = location.get("building")
    return building is not None and str(building) in {str(b) for b in issuer.buildings}
