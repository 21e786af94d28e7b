"""A user's grants as SQL conditions, so lists are filtered (and limited) by the database, not after the fact.

The same rules as :func:`centre.people.roles.allowed`: a whole-site grant covers its site; a
group grant covers the alerts whose ``groups`` contain the group; a household or zone grant
covers the alerts whose ``location`` names it.  JSON is asked differently by each engine
(``@>`` on PostgreSQL's JSONB, ``json_each`` on SQLite); everything else is plain Core.
"""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from centre.people.roles import PERMISSIONS, VIEW_ALERTS, Grant, sites_for
from centre.store import schema


def json_list_has(column, value: str, dialect: str):
    """``value`` is an element of the JSON list in ``column``."""
    if dialect == "postgresql":
        return sa.type_coerce(column, JSONB).contains([value])
    each = sa.func.json_each(column).table_valued("value").alias("each_value")
    return sa.exists(sa.select(sa.literal(1)).select_from(each).where(each.c.value == value))


def alerts_visible(grants: Iterable[Grant], dialect: str):
    """The alerts (``schema.alerts``) a user with these grants may see."""
    a = schema.alerts
    terms = []
    for g in grants:
        if VIEW_ALERTS not in PERMISSIONS.get(g.role, ()):
            continue
        here = sa.true() if g.site is None else a.c.site == g.site
        if g.scope_kind == "site":
            terms.append(here)
        elif g.scope_kind == "group":
            terms.append(sa.and_(here, json_list_has(a.c.groups, g.scope, dialect)))
        elif g.scope_kind in ("household", "zone"):
            terms.append(sa.and_(here, a.c.location[g.scope_kind].as_string() == g.scope))
    return sa.or_(*terms) if terms else sa.false()


def at_sites(grants: Iterable[Grant], action: str, column):
    """``column`` (a site column) is a site where the grants give ``action`` at any scope (site-level views)."""
    sites = sites_for(grants, action)
    if sites is None:
        return sa.true()
    return column.in_(sorted(sites)) if sites else sa.false()
