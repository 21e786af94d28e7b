"""Where an alert is: the site, plus the location of its device or of its household.

Location keys (building, unit, household, grid, zone) come from the devices'
``location`` in the site config; they go into every record and into the text,
with what people call each device (its ``labels``, for ``{label}``).
"""

from __future__ import annotations

from gateway.alerts.rules import ALL, Change


class Locations:
    def __init__(self, cfg, site_id: str):
        self.site_id = site_id
        self.devices: dict[str, dict] = {
            dev.id: {k: v for k, v in (dev.location.model_dump() if dev.location else {}).items() if v is not None}
            for _, dev in cfg.devices()
        }
        self.labels: dict[str, dict] = {dev.id: dict(getattr(dev, "labels", None) or {}) for _, dev in cfg.devices()}

    def device_of(self, ch: Change) -> str | None:
        """The device a change is about: named in its facts, its subject, or its first evidence."""
        return ch.facts.get("device") or (ch.subject if ch.subject in self.devices else None) or _evidence_device(ch)

    def for_change(self, spec, ch: Change) -> dict:
        """A device's location; for an inactivity rule per household, the household's (without zone)."""
        loc: dict = {}
        if ch.subject in self.devices:
            loc = dict(self.devices[ch.subject])
        elif getattr(spec, "type", "") == "inactivity" and ch.subject != ALL:
            for src in spec.sources:
                dl = self.devices.get(src.device, {})
                if dl.get("household") == ch.subject:
                    loc = {k: v for k, v in dl.items() if k != "zone"}
                    break
        else:
            dev = ch.facts.get("device") or _evidence_device(ch)
            loc = dict(self.devices.get(dev, {}))
        return {"site": self.site_id, **loc}

    def for_external(self, location: dict | None, device: str | None) -> dict:
        """What another service says; the device's own location when it says nothing."""
        loc = {"site": self.site_id, **{k: v for k, v in (location or {}).items() if v is not None and k != "site"}}
        if device in self.devices and len(loc) == 1:
            loc.update(self.devices[device])
        return loc


def _evidence_device(ch: Change) -> str | None:
    return next((e.get("device") for e in ch.evidence if e.get("device")), None)
