"""``labels:`` of a device or a point in the site config: what people call it, by language.

They go to ``…/meta`` (docs/protocol.md#meta), so a receiver shows "Mrs Wang's door"
instead of ``door-101``; keys are language tags, so a receiver can pick its language.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator

LANGUAGE_TAG = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")  # as core.protocol.messages.base.Labels
MAX_LABEL = 200


def _check(labels: dict[str, str]) -> dict[str, str]:
    for tag, text in labels.items():
        if not LANGUAGE_TAG.match(tag):
            raise ValueError(f"labels are keyed by language tag (en, zh-CN, ...), not {tag!r}")
        if not text.strip() or len(text) > MAX_LABEL:
            raise ValueError(f"the {tag} label must be 1 to {MAX_LABEL} characters")
    return labels


Labels = Annotated[dict[str, str], AfterValidator(_check)]
