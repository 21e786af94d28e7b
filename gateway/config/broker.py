"""How the gateway reaches its MQTT broker: address, protocol version, TLS and credentials.

The files these name (CA, client key, password file) are checked when the
site is loaded (``gateway.config.checks``), so a wrong path is a config error
with its line, not a failed connection an hour later.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from core.model import Strict


class TlsConfig(Strict):
    ca: str | None = Field(None, description="CA bundle (PEM) that signed the broker's certificate")
    cert: str | None = Field(None, description="client certificate (PEM), for mutual TLS")
    key: str | None = Field(None, description="client private key (PEM), must be 0600")
    verify_hostname: bool = True

    @model_validator(mode="after")
    def _pair(self) -> "TlsConfig":
        if (self.cert is None) != (self.key is None):
            raise ValueError("cert and key go together")
        return self


class BrokerConfig(Strict):
    host: str = Field(description="broker host name or address")
    port: int = Field(8883, ge=1, le=65535)
    protocol: Literal["5", "3.1.1"] = Field(
        "5", description='MQTT version: "5", or "3.1.1" for brokers that cannot speak 5 (docs/protocol.md lists what that loses)')
    tls: TlsConfig | None = Field(None, description="omit for plain TCP (only sensible on loopback or a VPN)")
    username: str | None = None
    password: str | None = Field(None, description="literal or ${ENV_VAR}; prefer password_file")
    password_file: str | None = Field(None, description="file holding the password, mode 0600")
    keepalive: int = Field(30, ge=5, le=3600)
    client_id: str | None = None
    max_inflight: int = Field(32, ge=1, le=65535, description="QoS 1 messages awaiting PUBACK")
    connect_timeout: float = Field(10.0, gt=0, le=120)
    backoff_initial: float = Field(1.0, gt=0, le=60)
    backoff_max: float = Field(60.0, gt=0, le=3600)

    @field_validator("protocol", mode="before")
    @classmethod
    def _version_as_text(cls, v):
        return str(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v  # YAML reads `protocol: 5` as a number

    @model_validator(mode="after")
    def _secret(self) -> "BrokerConfig":
        if self.password is not None and self.password_file is not None:
            raise ValueError("give password or password_file, not both")
        if (self.password is not None or self.password_file is not None) and not self.username:
            raise ValueError("a password needs a username")
        return self
