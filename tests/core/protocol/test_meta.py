"""The meta document: built from plain data, deterministic, versioned by the config, readable by a late joiner."""

from __future__ import annotations

import pytest

from core.protocol import meta
from core.protocol.schemas import validate

CONFIG = {"site": "sunny-court", "gateway": "gw-3", "buses": [{"id": "block-3", "devices": ["door-502"]}]}


def community(version: str | None = None, **over) -> dict:
    data = dict(
        site="sunny-court", gateway="gw-3", version=version or meta.config_hash(CONFIG), languages=("en", "zh-CN"),
        devices={
            "door-502": {"bus": "block-3", "profile": "door_lock", "location": {"site": "sunny-court", "building": "3", "unit": "502"},
                         "labels": {"en": "Mrs Wang's door", "zh-CN": "王阿姨家门"}},
            "meter-101": {"bus": "block-3", "profile": "water_meter",
                          "location": {"building": "3", "unit": "1", "household": "101", "grid": "G7"}},
            "smoke-shed": {"bus": "block-3", "location": {"building": "3", "zone": "e-bike-shed"}},
        },
        profiles={"door_lock": {"points": {"locked": {"type": "bool", "labels": {"en": "locked", "zh-CN": "已锁"}}}},
                  "water_meter": {"points": {"flow_rate": {"unit": "L/min", "type": "f32"}}}},
        groups={"property-office": {"recipients": ["duty-desk"], "labels": {"en": "Property office", "zh-CN": "物业"}},
                "volunteers": {"recipients": ["vol-wang", "vol-li"]}},
        chains={"fire": [{"group": "property-office", "after_s": 0}, {"group": "volunteers", "after_s": 120}]},
        households={"101": {"labels": {"en": "the Li household"}}},
        locks={"door-502": {"device": "door-502", "relock_after_s": 10, "actions": ["unlock", "lock"]}},
    )
    data.update(over)
    return meta.build_meta(**data)


def test_a_late_joiner_renders_the_place_from_meta_alone():
    doc = community()
    assert meta.describe(doc, "door-502") == "building 3, unit 502, Mrs Wang's door"
    assert meta.describe(doc, "door-502", "zh-CN") == "3号楼，502单元，王阿姨家门"
    assert meta.describe(doc, "meter-101") == "building 3, unit 1, the Li household, meter-101"
    assert meta.describe(doc, "smoke-shed") == "building 3, e-bike-shed, smoke-shed"
    assert meta.describe(doc, "unknown") == "unknown"


def test_households_and_zones_are_derived():
    doc = community()
    assert doc["households"]["101"]["devices"] == ["meter-101"]
    assert doc["households"]["101"]["location"] == {"building": "3", "unit": "1", "grid": "G7"}
    farm = meta.build_meta(site="f", gateway="g", version="0" * 16,
                           devices={"soil-2": {"location": {"zone": "zone-2"}}, "valves": {}},
                           valves={"zone-2": {"device": "valves", "point": "zone_2", "zone": 2, "max_run_s": 1800}})
    assert farm["zones"] == {"zone-2": {"valves": ["zone-2"], "devices": ["soil-2"]}}


def test_the_document_validates_and_is_deterministic():
    doc = community()
    assert validate("canopy/v1/sunny-court/gw-3/meta", meta.meta_payload(doc)) == []
    assert meta.meta_payload(community()) == meta.meta_payload(doc)


def test_the_version_changes_exactly_when_the_config_does():
    same = meta.config_hash({**CONFIG})
    changed = meta.config_hash({**CONFIG, "gateway": "gw-4"})
    assert same == meta.config_hash(CONFIG) != changed and len(changed) == 16
    assert community(version=changed)["version"] == changed


def test_bad_input_names_the_field():
    with pytest.raises(ValueError, match="devices.door-502.labels"):
        community(devices={"door-502": {"labels": {"English": "x"}}})
    with pytest.raises(ValueError, match="version"):
        community(version="not-a-hash")
