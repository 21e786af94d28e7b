"""The ``acting:`` section of centre.yaml: validities, re-sending, replay requests, the local time zone."""

from __future__ import annotations

from pydantic import Field, field_validator

from core.model import Strict


class ActingConfig(Strict):
    issuer_prefix: str = Field("centre", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,40}$",
                               description="issuer ids are {prefix}-1, {prefix}-2, … (one per key generation)")
    check_interval: float = Field(1.0, gt=0, le=60, description="seconds between the sender's rounds")
    resend_after: float = Field(30.0, gt=0, le=3600, description="first re-send of an unanswered envelope")
    resend_max: float = Field(300.0, gt=0, le=86400, description="re-sends back off up to this interval")
    send_batch: int = Field(200, ge=1, le=10_000, description="envelopes sent per round at most")
    envelope_validity: float = Field(3600.0, gt=0, le=86400,
                                     description="longest expires_at - issued_at of one envelope (the gateways' "
                                                 "commands.max_validity)")
    expire_grace: float = Field(30.0, ge=0, le=3600,
                                description="a sent envelope is marked expired this long after its validity, "
                                            "so an answer on its way arrives first")
    default_validity: float = Field(600.0, gt=0, le=7 * 86400, description="validity when the person gives none")
    max_validity: float = Field(24 * 3600.0, gt=0, le=30 * 86400, description="the longest validity a person may ask")
    replay_interval: float = Field(60.0, gt=0, le=86400, description="one replay request per gap this often at most")
    replay_validity: float = Field(300.0, gt=0, le=3600)
    timezone: str | None = Field(None, description="IANA zone for times shown to people (default: the host's)")

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str | None) -> str | None:
        if v is not None:
            from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

            try:
                ZoneInfo(v)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {v!r} (an IANA name such as Asia/Shanghai)") from None
        return v


def acting_config(cfg) -> ActingConfig:
    """The ``acting`` section of a CentreConfig, or the defaults while CentreConfig has no such field."""
    return getattr(cfg, "acting", None) or ActingConfig()
