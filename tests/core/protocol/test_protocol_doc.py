"""docs/protocol.md names everything core/protocol defines: problems, capabilities, record types, schema files."""

from __future__ import annotations

from pathlib import Path

from core.protocol import CAPABILITIES, PROTOCOL_VERSION, limits
from core.protocol.messages import EVENT_TYPES, MESSAGES, RESULT_TYPES
from core.protocol.reasons import PROBLEMS, UNSIGNED_ACK

DOC = (Path(__file__).resolve().parents[3] / "docs" / "protocol.md").read_text(encoding="utf-8")


def test_the_document_is_version_2():
    assert DOC.startswith(f"# Canopy MQTT protocol, version {PROTOCOL_VERSION}")
    assert "## Changelog v1 → v2" in DOC and "### Acknowledgements" in DOC


def test_every_code_and_name_is_documented():
    missing = [f"`{name}`" for name in [*PROBLEMS, *CAPABILITIES, UNSIGNED_ACK] if f"`{name}`" not in DOC]
    types = [m.model_fields["type"].annotation.__args__[0] for m in (*EVENT_TYPES, *RESULT_TYPES)]
    missing += [f"`{t}`" for t in types if t not in DOC]
    missing += [f"`{name}.json`" for name, _ in MESSAGES.values() if f"`{name}.json`" not in DOC]
    assert missing == []


def test_the_limits_table_matches_the_code():
    section = DOC.split("## Limits", 1)[1].split("\n## ", 1)[0]
    for lim in (limits.COMMAND, limits.ACK, limits.REPLAY, limits.CONFIG):
        row = next(line for line in section.splitlines() if line.startswith(f"| `{lim.kind}` |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[1].startswith(f"{lim.max_bytes // 1024} KiB"), row
        assert cells[2:6] == [str(lim.max_depth), str(lim.max_keys), str(lim.max_items), str(lim.max_values)], row
    assert f"**{limits.MAX_PACKET_SIZE}** bytes" in DOC
