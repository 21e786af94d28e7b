"""The site's ``…/meta`` document: what a receiver needs to read the data, from the validated config.

The config says where each device is, what its points mean, who is paged and in
which order; the broker must say it too, or a centre that joins late can only
show ``door-101``.  This module turns a :class:`LoadedConfig` into the plain
data :func:`core.protocol.meta.build_meta` takes, and versions it by the hash of
the whole effective config (site and the profiles it uses), so the version
changes exactly when the config does and the same config gives the same bytes.
"""

from __future__ import annotations

from typing import Any

from core.protocol.meta import build_meta, config_hash, meta_payload
from gateway.config.site import LoadedConfig

LANGUAGE_TAGS = {"en": "en", "zh": "zh-CN"}  # the site's `language:` as a label language tag
VALVE_ACTIONS = ["irrigate", "close"]
LOCK_ACTIONS = ["unlock", "lock", "reset_lockout"]
CONTROL_ACTIONS = ["override"]


def config_version(cfg: LoadedConfig) -> str:
    """The config's hash: the site as validated (defaults included) plus every profile it loaded.

    A literal broker password is left out: the version is public, its preimage must not hold a secret.
    """
    return config_hash({
        "site": cfg.site.model_dump(mode="json", by_alias=True, exclude={"broker": {"password"}}),
        "profiles": {name: prof.model_dump(mode="json") for name, prof in sorted(cfg.profiles.items())},
    })


def site_meta(cfg: LoadedConfig) -> dict:
    """The meta document of a loaded site; ValueError (naming the field) if the config cannot be expressed."""
    site = cfg.site
    rules, commands = site.rules, site.commands
    devices = {dev.id: _device(bus.id, dev) for bus, dev in cfg.devices() if getattr(dev, "enabled", True)}
    used = sorted({d["profile"] for d in devices.values() if d.get("profile")} & set(cfg.profiles))
    parts: dict[str, Any] = {
        "devices": devices,
        "profiles": {name: _profile(cfg.profiles[name]) for name in used},
        "groups": {name: _group(g, site.language) for name, g in rules.groups.items()} if rules else {},
        "chains": {name: [{"group": s.group, "after_s": s.after} for s in c.escalation]
                   for name, c in rules.classes.items()} if rules else {},
        "valves": {v.id: _clean({"device": v.device, "point": v.point, "zone": v.zone, "max_run_s": v.max_run,
                                 "actions": VALVE_ACTIONS}) for v in commands.valves} if commands else {},
        "locks": {lk.id: {"device": lk.device, "relock_after_s": lk.relock_after, "actions": LOCK_ACTIONS}
                  for lk in commands.locks} if commands else {},
        "cameras": {c.id: _clean({"location": _location(c.location)}) for c in site.cameras if c.enabled},
        "controls": {c.id: _clean({"device": c.output.device, "point": c.output.point, "kind": c.kind,
                                   "labels": dict(c.labels), "actions": CONTROL_ACTIONS}) for c in site.controls},
    }
    return build_meta(site=site.site, gateway=site.gateway, version=config_version(cfg),
                      languages=_languages(site.language, parts), **parts)


def site_meta_payload(cfg: LoadedConfig) -> tuple[str, bytes]:
    """(version, retained payload) of the site's meta."""
    doc = site_meta(cfg)
    return doc["version"], meta_payload(doc)


# -- parts ------------------------------------------------------------------------------------
def _device(bus_id: str, dev: Any) -> dict:
    out: dict[str, Any] = {"bus": bus_id, "location": _location(getattr(dev, "location", None)),
                           "labels": dict(getattr(dev, "labels", None) or {})}
    if getattr(dev, "profile", None) is not None:
        out["profile"] = dev.profile
    else:  # a serial-line sensor: its points are its own
        out["points"] = {p.name: _point(p) for p in getattr(dev, "points", [])}
    return _clean(out)


def _point(p: Any) -> dict:
    labels = dict(getattr(p, "labels", None) or {})
    if not labels and getattr(p, "description", ""):
        labels = {"en": p.description}  # profiles describe points in English until they carry labels
    return _clean({"unit": p.unit, "type": p.type, "writable": getattr(p, "writable", False), "labels": labels})


def _profile(prof: Any) -> dict:
    return {"points": {p.name: _point(p) for p in prof.points}}


def _group(group: Any, language: str) -> dict:
    labels = dict(getattr(group, "labels", None) or {})
    if not labels and group.description:
        labels = {LANGUAGE_TAGS.get(language, language): group.description}
    return _clean({"recipients": list(group.recipients), "labels": labels})


def _location(loc: Any) -> dict:
    return {k: v for k, v in loc.model_dump().items() if v is not None} if loc is not None else {}


def _languages(language: str, parts: dict) -> list[str]:
    """The site's own language first, then every other language a label uses."""
    own = LANGUAGE_TAGS.get(language, language)
    return [own, *sorted(_label_tags(parts) - {own})]


def _label_tags(node: Any) -> set[str]:
    if isinstance(node, dict):
        labels = node.get("labels")
        own = set(labels) if isinstance(labels, dict) and all(isinstance(t, str) for t in labels.values()) else set()
        return own.union(*(_label_tags(v) for v in node.values()))
    return set()


def _clean(d: dict) -> dict:
    """Leave out what is not set, so the document says only what the config says."""
    return {k: v for k, v in d.items() if v not in (None, {}, [], "", False)}
