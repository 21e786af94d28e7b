"""Which console page a person may open, by their roles -- pure functions, so the 403 and the home link agree.

The API checks every piece of data and every action by itself; this only decides which
*page* makes sense for a role, so a farmer who opens the duty desk gets a clear 403 page
with a link to their own page, instead of an empty desk full of refusals.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from centre.people.roles import Grant


@dataclass(frozen=True, slots=True)
class Page:
    name: str  # also its catalogue key: "page.<name>"
    path: str
    file: str  # under static/
    roles: frozenset[str]


PAGES: dict[str, Page] = {p.name: p for p in (
    Page("desk", "/desk", "desk.html", frozenset({"duty_desk", "admin"})),
    Page("farm", "/farm", "farm.html", frozenset({"farmer", "admin"})),
    Page("volunteer", "/volunteer", "volunteer.html", frozenset({"volunteer", "grid_leader", "duty_desk", "admin"})),
    Page("admin", "/admin", "admin.html", frozenset({"installer", "admin"})),
)}
# a person with several pages starts on the first of these (an administrator on the desk, an installer on /admin)
HOME_ORDER = ("desk", "farm", "volunteer", "admin")


def pages_for(grants: Iterable[Grant]) -> list[Page]:
    """The pages these grants may open, in :data:`HOME_ORDER`."""
    roles = {g.role for g in grants}
    return [PAGES[n] for n in HOME_ORDER if PAGES[n].roles & roles]


def home_for(grants: Iterable[Grant]) -> Page | None:
    """Where a person lands after logging in (None: no console page for their roles)."""
    mine = pages_for(grants)
    return mine[0] if mine else None


def may_open(grants: Iterable[Grant], page: Page) -> bool:
    return any(g.role in page.roles for g in grants)
