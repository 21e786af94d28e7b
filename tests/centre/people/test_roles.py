"""Who may do what where: the role table and the scope rules (pure functions)."""

from __future__ import annotations

import pytest

from centre.people.roles import (ACK_ALERTS, DOORS, IRRIGATION, PERMISSIONS, ROLES, VIEW_ALERTS, VIEW_READINGS, Grant,
                                 allowed, check_grant, parse_scope, sites_for)

DUTY = [Grant("duty_desk", "sunny-court")]
WANG = [Grant("volunteer", "sunny-court", "group", "volunteers")]
ZHANG = [Grant("farmer", "green-valley")]
WORKER = [Grant("farmer", "green-valley", "zone", "2")]


def test_the_roles_of_the_product():
    assert ROLES == ("duty_desk", "volunteer", "grid_leader", "farmer", "installer", "admin")
    assert DOORS in PERMISSIONS["duty_desk"] and DOORS not in PERMISSIONS["farmer"]
    assert IRRIGATION in PERMISSIONS["farmer"] and IRRIGATION not in PERMISSIONS["duty_desk"]
    assert PERMISSIONS["volunteer"] == {VIEW_ALERTS, ACK_ALERTS}
    assert all(PERMISSIONS[r] <= PERMISSIONS["admin"] for r in ROLES)


def test_a_whole_site_grant_covers_its_site_only():
    assert allowed(DUTY, ACK_ALERTS, site="sunny-court", group=["property-office"], household="101") is None
    assert allowed(DUTY, ACK_ALERTS, site="other") == "you have no role that may alerts.ack at site other"
    assert allowed([Grant("admin")], DOORS, site="anywhere") is None


def test_a_group_grant_covers_alerts_that_reached_the_group():
    assert allowed(WANG, VIEW_ALERTS, site="sunny-court", group=["property-office", "volunteers"]) is None
    reason = allowed(WANG, VIEW_ALERTS, site="sunny-court", group=["property-office"], household="101")
    assert reason == ("alerts.view at site sunny-court is outside your scope (group volunteers); "
                      "this is for groups property-office, household 101")
    assert allowed(WANG, VIEW_ALERTS, site="sunny-court", group=[]) is not None  # an alert of no group


def test_a_farmer_may_not_ack_elderly_alerts_nor_unlock_doors():
    assert allowed(ZHANG, ACK_ALERTS, site="sunny-court", group=["property-office"]) is not None
    assert allowed(ZHANG, DOORS, site="sunny-court", household="101") == "your roles (farmer) may not doors.control"
    assert allowed(ZHANG, ACK_ALERTS, site="green-valley", group=["farmer"]) is None


def test_a_zone_grant_covers_its_zone_and_site_level_views():
    assert allowed(WORKER, IRRIGATION, site="green-valley", zone="2") is None
    assert allowed(WORKER, IRRIGATION, site="green-valley", zone="3") is not None
    assert allowed(WORKER, IRRIGATION, site="green-valley") is not None  # close-all needs the whole site
    assert allowed(WORKER, VIEW_READINGS, site="green-valley", site_level=True) is None


def test_sites_for_lists_or_says_every_site():
    assert sites_for(DUTY + ZHANG, VIEW_ALERTS) == {"sunny-court", "green-valley"}
    assert sites_for(WANG, VIEW_READINGS) == set()
    assert sites_for([Grant("admin")], VIEW_READINGS) is None


def test_scopes_and_grants_are_checked_with_clear_words():
    assert parse_scope("group:property-office") == ("group", "property-office")
    assert parse_scope("zone:2") == ("zone", "2")
    for bad, words in (("property-office", "write group:NAME"), ("team:x", "write group:NAME"),
                       ("group:bad name", "is not an id")):
        with pytest.raises(ValueError, match=words):
            parse_scope(bad)
    with pytest.raises(ValueError, match="unknown role 'boss'"):
        check_grant(Grant("boss"))
    with pytest.raises(ValueError, match="not a valid scope"):
        check_grant(Grant("volunteer", "s", "group", None))
