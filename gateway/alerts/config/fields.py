"""The field types every part of the ``rules:`` section uses: names, durations, severities."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BeforeValidator, ConfigDict, Field

from core.model import Strict as _Strict
from gateway.alerts.timeutil import MAX_DURATION, parse_duration

RuleId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
Duration = Annotated[float, BeforeValidator(parse_duration), Field(ge=0, le=MAX_DURATION)]
PositiveDuration = Annotated[float, BeforeValidator(parse_duration), Field(gt=0, le=MAX_DURATION)]
Severity = Literal["critical", "warning", "info"]
Scalar = Union[bool, int, float, str]


class Strict(_Strict):
    """The strict base, with aliases also accepted by field name (``on`` is a YAML 1.1 boolean)."""

    model_config = ConfigDict(**_Strict.model_config, populate_by_name=True)
