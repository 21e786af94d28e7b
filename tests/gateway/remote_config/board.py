"""A board for the remote-config tests: a temporary install root with a site, its profiles, two issuers and the
applier's folder; envelopes signed the way ``canopy remote configure`` signs them.

``grant_configure`` gives the ``admin`` issuer the ``configure`` permission: with the YAML key once
``IssuerConfig`` has it, until then by standing in for the field (the code reads it with getattr).
The fixtures are in conftest.py.
"""

from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path

import orjson
import yaml

from core.protocol import envelope
from gateway.commands.config import IssuerConfig
from gateway.config.load import load_config
from gateway.ops.layout import Layout
from gateway.remote_config.bundle import digest

REPO = Path(__file__).resolve().parents[3]
HAS_CONFIGURE = "configure" in IssuerConfig.model_fields
CONFIGURE_MARK = "may configure this gateway"
SITE, GATEWAY = "farm-a", "gw-1"


def grant_configure(monkeypatch) -> None:
    if not HAS_CONFIGURE:
        monkeypatch.setattr(IssuerConfig, "configure", property(lambda self: self.description == CONFIGURE_MARK), raising=False)


class Board:
    """``root`` laid out as docs/operations.md says; ``document`` is the site as a JSON document."""

    def __init__(self, tmp: Path, *, broker_port: int = 1883):
        self.layout = Layout(tmp / "root")
        self.etc, self.state = self.layout.etc, self.layout.state
        (self.etc / "profiles").mkdir(parents=True)
        for name in ("soil_probe", "tank_level"):
            shutil.copyfile(REPO / "config" / "profiles" / f"{name}.yaml", self.etc / "profiles" / f"{name}.yaml")
        self.layout.updates.mkdir(parents=True)
        os.chmod(self.state, 0o700)
        self.keys = {name: envelope.generate() for name in ("admin", "farmer")}
        self.document = self.site_document(broker_port)
        self.write(self.document)

    @property
    def site_file(self) -> Path:
        return self.layout.site_config

    @property
    def status_path(self) -> Path:
        return self.state / "canopy-status.json"

    def site_document(self, broker_port: int) -> dict:
        def issuer(name: str, configure: bool) -> dict:
            out = {"public_key": envelope.public_key_text(self.keys[name].public_key()), "actions": ["close_all"]}
            if configure:
                out["description"] = CONFIGURE_MARK
                if HAS_CONFIGURE:
                    out["configure"] = True
            return out

        return {
            "site": SITE, "gateway": GATEWAY, "profiles_dir": "profiles",
            "broker": {"host": "127.0.0.1", "port": broker_port},
            "store": {"path": str(self.state / "outbox.sqlite")},
            "buses": [{"id": "field", "type": "modbus_tcp", "host": "127.0.0.1", "port": 15020,
                       "devices": [{"id": "soil-1", "unit": 1, "profile": "soil_probe"}]}],
            "commands": {"issuers": {"admin": issuer("admin", True), "farmer": issuer("farmer", False)}},
        }

    def write(self, document: dict) -> None:
        self.site_file.write_text(yaml.safe_dump(document, sort_keys=False))

    def loaded(self):
        return load_config(self.site_file, missing_ports_ok=True)

    def variant(self, **changes) -> dict:
        """The site document with top-level keys replaced (``broker={...}``) -- a config to push."""
        doc = copy.deepcopy(self.document)
        doc.update(changes)
        return doc

    def envelope(self, document: dict | None = None, *, issuer: str = "admin", profiles: dict | None = None,
                 params: dict | None = None, valid_for: float = 600.0, now: float | None = None, **kw) -> dict:
        document = self.document if document is None else document
        if params is None:
            params = {"config": document, "sha256": digest(document), **({"profiles": profiles} if profiles else {})}
        env = envelope.make(issuer=issuer, site=kw.pop("site", SITE), gateway=kw.pop("gateway", GATEWAY), target="*",
                            action=kw.pop("action", "apply"), params=params, valid_for=valid_for, now=now, v=2,
                            kind="config", **kw)
        return envelope.sign(env, self.keys[issuer])

    def payload(self, *args, **kw) -> bytes:
        return orjson.dumps(self.envelope(*args, **kw))
