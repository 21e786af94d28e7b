"""The batch envelope every record travels in, and the telemetry record.

``{"v","site","gateway","epoch","lane","seq":[first,last],"records":[{"seq":n,…}]}``
(docs/protocol.md#batch-envelope).  One message carries records of one lane; a
record is identified by ``(site, gateway, epoch, lane, seq)`` on whichever topic it
arrives.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, create_model

from core.protocol.messages.base import Id, Lane, Record, Strict, Value


class BatchHead(Strict):
    v: Literal[1, 2] = Field(description="protocol version of the gateway that published it")
    site: Id
    gateway: Id
    epoch: str = Field(pattern=r"^[0-9a-f]{16}$", description="the outbox file's identity; seqs restart at 1 in a new epoch")
    lane: Lane
    seq: tuple[int, int] = Field(description="[first, last] seq of the records in this message")


def batch_model(name: str, record: Any, lanes: tuple[str, ...], doc: str) -> type[BatchHead]:
    """A batch model whose records are ``record`` (a model or a discriminated union) in one of ``lanes``."""
    return create_model(name, __base__=BatchHead, __doc__=doc,
                        lane=(Literal[lanes], ...),  # type: ignore[valid-type]
                        records=(list[record], Field(min_length=1)))


class TelemetryRecord(Record):
    """One point of one poll (``core.records.reading_body``)."""

    device: Id
    point: str
    value: Value = Field(description="engineering value; null only with `invalid`")
    unit: str = Field("", description="the point's unit; absent when the profile gives none")
    invalid: Literal["nan", "inf", "-inf"] = Field(None, description="present only when value is null: what the device sent")


TelemetryBatch = batch_model("TelemetryBatch", TelemetryRecord, ("telemetry",),
                             "…/telemetry: readings of the telemetry lane.")
