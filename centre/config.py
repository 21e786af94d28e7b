"""centre.yaml: where the broker and the database are, where the issuer keys live, where HTTP listens.

Loaded like a site config (``core.yamlsrc``): every problem names ``file:line: key``, never a
traceback.  Secrets stay out of the file: ``${ENV_VAR}`` in a value, or a ``password_file``.
The other modules' sections (people, acting, routing, jobs) are added by
``centre.fullconfig.FullConfig``, which ``canopy-centre`` loads: they import this module,
so it cannot import them.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from core.model import Strict
from core.yamlsrc import ConfigError, Problem, Source, load_yaml


class Tls(Strict):
    ca: str | None = Field(None, description="CA bundle (PEM) that signed the broker's certificate")
    cert: str | None = Field(None, description="client certificate (PEM), for mutual TLS")
    key: str | None = Field(None, description="client private key (PEM), mode 0600")
    verify_hostname: bool = True

    @model_validator(mode="after")
    def _pair(self) -> "Tls":
        if (self.cert is None) != (self.key is None):
            raise ValueError("cert and key go together")
        return self


class Broker(Strict):
    """The broker every gateway publishes to (docs/centre.md#broker-settings-that-matter)."""

    host: str
    port: int = Field(8883, ge=1, le=65535)
    protocol: Literal["5", "3.1.1"] = Field("5", description='"3.1.1" only for a single instance on an old broker')
    tls: Tls | None = None
    username: str | None = None
    password: str | None = Field(None, description="literal or ${ENV_VAR}; prefer password_file")
    password_file: str | None = None
    client_id: str | None = Field(None, description="stable per instance (the session belongs to it); "
                                                    "default canopy-centre-{instance}")
    share_group: str = Field("centre", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    keepalive: int = Field(30, ge=5, le=3600)
    session_expiry: int = Field(86400, ge=0, le=2**32 - 1, description="seconds the broker keeps our session "
                                                                        "while an instance restarts")
    receive_maximum: int = Field(1000, ge=1, le=65535, description="QoS 1 messages in flight to us, unacked")
    backoff_initial: float = Field(0.5, gt=0, le=60)
    backoff_max: float = Field(30.0, gt=0, le=3600)

    @field_validator("protocol", mode="before")
    @classmethod
    def _version_as_text(cls, v):
        return str(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v

    @model_validator(mode="after")
    def _secret(self) -> "Broker":
        if self.password is not None and self.password_file is not None:
            raise ValueError("give password or password_file, not both")
        if (self.password is not None or self.password_file is not None) and not self.username:
            raise ValueError("a password needs a username")
        return self


class Database(Strict):
    url: str = Field(description="sqlite:///path/centre.sqlite or postgresql://user@host/db (${ENV} for a password)")
    synchronous: Literal["FULL", "NORMAL"] = Field("FULL", description="SQLite only: FULL survives power loss")
    pool_size: int = Field(5, ge=1, le=100)

    @field_validator("url")
    @classmethod
    def _engine(cls, v: str) -> str:
        if not v.split(":", 1)[0].split("+", 1)[0] in ("sqlite", "postgresql", "postgres"):
            raise ValueError("must start with sqlite:/// or postgresql://")
        return v


class Http(Strict):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    tls_cert: str | None = None
    tls_key: str | None = None
    allow_plain_http: bool = Field(False, description="serve plain HTTP on a non-loopback address (only behind a TLS proxy)")
    self_signed: bool = Field(False, description="no tls_cert: serve HTTPS with the centre's own certificate (made in tls_dir)")
    tls_dir: str = Field("tls", description="where the self-signed certificate and its key (0600) are kept")

    @model_validator(mode="after")
    def _secure_bind(self) -> "Http":
        from centre.web.bind import plain_http_problem  # imports no web framework

        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        if self.self_signed and self.tls_cert:
            raise ValueError("self_signed makes the centre's own certificate: give either it or tls_cert/tls_key")
        problem = plain_http_problem(self.host, tls=bool(self.tls_cert) or self.self_signed,
                                     allow_plain_http=self.allow_plain_http)
        if problem is not None:
            raise ValueError(problem)
        return self


class Ingest(Strict):
    """How gateway traffic becomes rows (docs/centre.md#ingest)."""

    batch_max_records: int = Field(5000, ge=1, le=100_000, description="records per transaction at most")
    batch_max_delay: float = Field(0.05, ge=0, le=5, description="seconds a message may wait for others to join its commit")
    queue_max_messages: int = Field(2000, ge=1, le=100_000, description="messages received and not yet committed")
    gap_report_after: float = Field(30.0, gt=0, description="a seq gap open this long is recorded in gaps")
    gap_check_interval: float = Field(5.0, gt=0)
    gap_give_up_after: float = Field(6 * 3600.0, gt=0, description="an open gap older than this is unrepairable")


class Retention(Strict):
    raw_days: float = Field(30, gt=0, description="raw telemetry kept this long; the hourly rollup stays")
    hourly_days: float = Field(3650, gt=0)


class CentreConfig(Strict):
    instance: str = Field(default_factory=lambda: socket.gethostname().split(".")[0][:64] or "centre",
                          pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    broker: Broker
    database: Database
    keys_dir: str = Field("keys", description="issuer keys, one per site, files 0600 (never in the database)")
    http: Http = Http()
    ingest: Ingest = Ingest()
    retention: Retention = Retention()

    @property
    def client_id(self) -> str:
        return self.broker.client_id or f"canopy-centre-{self.instance}"


def load_config(file: str | Path, model: type[CentreConfig] = CentreConfig) -> CentreConfig:
    """Load and validate centre.yaml; raises ConfigError with ``file:line: key: message`` problems.

    ``model``: a subclass with more sections (``centre.fullconfig.FullConfig``, what ``canopy-centre`` loads)."""
    src = load_yaml(file)
    if not isinstance(src.data, dict):
        raise ConfigError([Problem(src.file, 1, "", "centre.yaml must be a mapping of keys")])
    try:
        cfg = model.model_validate(src.data)
    except ValidationError as exc:
        raise ConfigError([_problem(err, src) for err in exc.errors(include_url=False)]) from None
    base = os.path.dirname(os.path.abspath(src.file))
    return resolve_paths(cfg, base)


def resolve_paths(cfg: CentreConfig, base: str) -> CentreConfig:
    """Relative paths in the config are relative to the config file's folder."""
    def at(p: str | None) -> str | None:
        return None if p is None else os.path.join(base, p)

    b = cfg.broker
    tls = b.tls.model_copy(update={"ca": at(b.tls.ca), "cert": at(b.tls.cert), "key": at(b.tls.key)}) if b.tls else None
    broker = b.model_copy(update={"password_file": at(b.password_file), "tls": tls})
    http = cfg.http.model_copy(update={"tls_cert": at(cfg.http.tls_cert), "tls_key": at(cfg.http.tls_key),
                                       "tls_dir": at(cfg.http.tls_dir)})
    return cfg.model_copy(update={"keys_dir": at(cfg.keys_dir), "broker": broker, "http": http})


def _problem(err: dict, src: Source) -> Problem:
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown key (check spelling; see docs/centre.md)"
    elif err["type"] == "missing":
        msg = "required key is missing"
    elif "input" in err and not isinstance(err["input"], (dict, list)) and "password" not in str(err["loc"]):
        msg = f"{msg} (got {err['input']!r})"
    return src.problem(tuple(err["loc"]), msg)
