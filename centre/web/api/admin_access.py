"""Who may use the installer/admin endpoints, and where: one gate per permission, refusals audited.

The admin API spans sites, so :func:`centre.web.auth.require` (one target at one site) is
not enough on its own: :func:`gate` first asks whether the caller holds the permission at
*any* site (else a 403 with the reason, audited), and returns the sites it covers (``None``:
every site) for the endpoint to filter by.  :func:`cover` then checks each site an action
touches, so an administrator of one site can never hand out or take away a role elsewhere.
"""

from __future__ import annotations

from collections.abc import Iterable

from centre.people.roles import allowed, sites_for
from centre.web.auth import Caller, refuse, require


async def gate(caller: Caller, permission: str, target: str) -> set[str] | None:
    """The sites where the caller has ``permission`` (None: every site); a 403 (audited) when none."""
    sites = sites_for(caller.grants, permission)
    if sites is None or sites:
        return sites
    reason = allowed(caller.grants, permission, site=None) or f"you may not {permission}"
    raise await refuse(caller.web, status=403, detail=reason, actor=caller.username, action=permission, ip=caller.ip,
                       target=target)


async def cover(caller: Caller, permission: str, sites: Iterable[str | None], target: str) -> None:
    """Every site in ``sites`` (None: a grant for every site) is within the caller's ``permission``; else a 403."""
    for site in sorted(set(sites), key=lambda s: (s is not None, s or "")):
        if site is None:
            if sites_for(caller.grants, permission) is not None:
                raise await refuse(caller.web, status=403, actor=caller.username, action=permission, ip=caller.ip,
                                   target=target, detail=f"only a holder of {permission} at every site may change "
                                                         "a role that covers every site")
            continue
        await require(caller, permission, site=site, site_level=True, target=target)


def visible(sites: set[str] | None, site: str | None) -> bool:
    """A row of ``site`` is shown to a caller whose permission covers ``sites``."""
    return sites is None or site in sites
