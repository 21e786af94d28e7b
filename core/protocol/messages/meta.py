"""``…/meta`` (retained): what people need to read the data, versioned by the config's hash.

Devices with their location and labels, the points of their profiles with units and
labels, recipient groups and escalation chains, households, irrigation zones, valves,
locks, controls and cameras.  A receiver that joins late renders "building 3, unit 502,
Mrs Wang's door" from this document alone (core.protocol.meta.describe).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from core.protocol.messages.base import Id, Labels, Place, Strict


class Point(Strict):
    unit: str = ""
    type: str | None = None
    writable: bool = False
    labels: Labels = {}


class Profile(Strict):
    points: dict[str, Point]


class Device(Strict):
    bus: str | None = None
    profile: str | None = Field(None, description="key of `profiles`: the device's points")
    location: Place = Place()
    labels: Labels = {}
    points: dict[str, Point] = Field({}, description="points of its own (serial-line sensors), beside its profile's")


class Group(Strict):
    recipients: list[str]
    labels: Labels = {}


class ChainStep(Strict):
    group: str
    after_s: float = Field(ge=0, description="seconds after the raise")


class Household(Strict):
    location: Place = Place()
    labels: Labels = {}
    devices: list[str] = []


class Zone(Strict):
    """An irrigation zone: its valves and the devices (probes) in it."""

    labels: Labels = {}
    valves: list[str] = []
    devices: list[str] = []


class Valve(Strict):
    device: str
    point: str
    zone: int | None = None
    max_run_s: float | None = None
    labels: Labels = {}
    actions: list[str] = []


class Lock(Strict):
    device: str
    relock_after_s: float | None = None
    labels: Labels = {}
    actions: list[str] = []


class Control(Strict):
    """Something a person may switch through a command (fan, mister, sounder): what, where, how."""

    device: str
    point: str
    kind: str
    labels: Labels = {}
    actions: list[str] = []


class Camera(Strict):
    location: Place = Place()
    labels: Labels = {}


class Meta(Strict):
    v: Literal[2]
    site: Id
    gateway: Id
    version: str = Field(pattern=r"^[0-9a-f]{16}$", description="the config's hash: changes exactly when the config does")
    languages: list[str] = Field(description="label languages, the site's own first")
    devices: dict[str, Device]
    profiles: dict[str, Profile] = {}
    groups: dict[str, Group] = {}
    chains: dict[str, list[ChainStep]] = Field({}, description="escalation chain per alert class")
    households: dict[str, Household] = {}
    zones: dict[str, Zone] = {}
    valves: dict[str, Valve] = {}
    locks: dict[str, Lock] = {}
    controls: dict[str, Control] = {}
    cameras: dict[str, Camera] = {}
