"""The ``…/meta`` document from plain data, and a device's place in words from that document alone.

Pure functions: the gateway hands in what its config says (as dicts), gets back a
validated, deterministic document whose ``version`` is the config's hash, and
publishes it retained whenever that hash changes.  A receiver that joined late
renders "building 3, unit 502, Mrs Wang's door" with :func:`describe`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import orjson
from pydantic import ValidationError

from core.protocol.messages.meta import Meta

# How each part of a location reads, per language (the site's labels name the rest).
WORDS: dict[str, dict[str, str]] = {
    "en": {"building": "building {}", "unit": "unit {}", "household": "household {}", "sep": ", "},
    "zh-CN": {"building": "{}号楼", "unit": "{}单元", "household": "{}户", "sep": "，"},
}


def config_hash(config: Mapping | bytes) -> str:
    """16 hex digits of the sha256 of the config's canonical JSON (or of the given bytes): the meta version."""
    data = config if isinstance(config, bytes) else orjson.dumps(config, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(data).hexdigest()[:16]


def build_meta(*, site: str, gateway: str, version: str, devices: Mapping[str, Mapping], languages=("en",),
               profiles: Mapping | None = None, groups: Mapping | None = None, chains: Mapping | None = None,
               households: Mapping | None = None, zones: Mapping | None = None, valves: Mapping | None = None,
               locks: Mapping | None = None, controls: Mapping | None = None, cameras: Mapping | None = None) -> dict:
    """The meta document (docs/protocol.md#meta); raises ValueError naming the first field that is wrong.

    Households and irrigation zones that are not given are derived: a household from the
    devices whose location names it, a zone ``zone-N`` from the valves with ``zone: N``
    and the devices located in it.
    """
    valves = dict(valves or {})
    doc: dict[str, Any] = {
        "v": 2, "site": site, "gateway": gateway, "version": version, "languages": list(languages),
        "devices": dict(devices), "profiles": dict(profiles or {}), "groups": dict(groups or {}),
        "chains": dict(chains or {}), "households": _households(devices, households or {}),
        "zones": _zones(devices, valves, zones or {}), "valves": valves, "locks": dict(locks or {}),
        "controls": dict(controls or {}), "cameras": dict(cameras or {}),
    }
    try:
        model = Meta.model_validate(doc)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(map(str, first["loc"]))
        raise ValueError(f"meta: {where}: {first['msg']}") from None
    return model.model_dump(mode="json", by_alias=True, exclude_defaults=True)


def meta_payload(doc: Mapping) -> bytes:
    """The retained message: the same document always gives the same bytes."""
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)


def _households(devices: Mapping[str, Mapping], given: Mapping) -> dict:
    out = {h: dict(v) for h, v in given.items()}
    for dev_id, dev in sorted(devices.items()):
        loc = dev.get("location") or {}
        h = loc.get("household")
        if not h:
            continue
        entry = out.setdefault(h, {})
        entry.setdefault("location", {k: loc[k] for k in ("site", "building", "unit", "grid") if loc.get(k)})
        if dev_id not in entry.setdefault("devices", []):
            entry["devices"] = [*entry["devices"], dev_id]
    return out


def _zones(devices: Mapping[str, Mapping], valves: Mapping[str, Mapping], given: Mapping) -> dict:
    out = {z: dict(v) for z, v in given.items()}
    for valve_id, valve in sorted(valves.items()):
        if valve.get("zone") is not None:
            entry = out.setdefault(f"zone-{valve['zone']}", {})
            entry["valves"] = sorted({*entry.get("valves", []), valve_id})
    for dev_id, dev in sorted(devices.items()):
        zone = (dev.get("location") or {}).get("zone")
        if zone in out:
            out[zone]["devices"] = sorted({*out[zone].get("devices", []), dev_id})
    return out


def label(labels: Mapping[str, str] | None, lang: str, fallback: tuple[str, ...] = ("en",)) -> str | None:
    """The label in ``lang``, else its base language, else a fallback language, else any; None if there is none."""
    if not labels:
        return None
    for tag in (lang, lang.split("-")[0], *fallback):
        if labels.get(tag):
            return labels[tag]
    return next(iter(labels.values()), None)


def describe(meta: Mapping, thing: str, lang: str = "en") -> str:
    """Where a device (or camera) is, in words: "building 3, unit 502, Mrs Wang's door"; its id if meta has nothing."""
    entry = meta.get("devices", {}).get(thing) or meta.get("cameras", {}).get(thing)
    if entry is None:
        return thing
    words = WORDS.get(lang) or WORDS.get(lang.split("-")[0]) or WORDS["en"]
    fallback = tuple(meta.get("languages", ())) + ("en",)
    loc = entry.get("location") or {}
    parts = []
    if loc.get("building"):
        parts.append(words["building"].format(loc["building"]))
    if loc.get("unit"):
        parts.append(words["unit"].format(loc["unit"]))
    if loc.get("household"):
        household = meta.get("households", {}).get(loc["household"], {})
        parts.append(label(household.get("labels"), lang, fallback) or words["household"].format(loc["household"]))
    if loc.get("zone"):
        zone = meta.get("zones", {}).get(loc["zone"], {})
        parts.append(label(zone.get("labels"), lang, fallback) or loc["zone"])
    parts.append(label(entry.get("labels"), lang, fallback) or thing)
    return words["sep"].join(parts)
