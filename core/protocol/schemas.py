"""JSON Schemas (draft 2020-12) of every message, generated from core.protocol.messages, and a validator by topic.

``python -m core.protocol.schemas --write`` regenerates ``docs/schemas/*.json``;
``--check`` exits 1 when the committed files and the models disagree (a test runs it).
:func:`validate` checks one ``(topic, payload)`` against the committed schema for its
topic and returns readable problems (an empty list when it is valid); jsonschema is
imported only there, so the product does not need it.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path
from typing import Any


from core.protocol import PROTOCOL_VERSION, limits
from core.protocol.messages import MESSAGES
from core.protocol.topics import parse_topic

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "docs" / "schemas"
DIALECT = "https://json-schema.org/draft/2020-12/schema"
# topic leaf -> the limits its payloads are parsed with (what a receiver of that topic applies)
_LIMITS = {"telemetry": limits.BATCH, "event": limits.BATCH, "alert/{group}": limits.BATCH, "cmd/result": limits.BATCH,
           "state": limits.STATE, "meta": limits.META, "cmd": limits.COMMAND, "alert/ack": limits.ACK,
           "config": limits.CONFIG, "replay": limits.REPLAY}
MAX_PROBLEMS = 20


def generate() -> dict[str, dict]:
    """Schema file name (without .json) -> schema, from the models."""
    out = {}
    for leaf, (name, model) in MESSAGES.items():
        schema = model.model_json_schema(mode="validation")
        out[name] = {"$schema": DIALECT, "$id": f"urn:canopy:protocol:{PROTOCOL_VERSION}:{name}",
                     "x-canopy-topic": f"canopy/v1/{{site}}/{{gateway}}/{leaf}", **schema}
    return out


def render(schema: dict) -> str:
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write(directory: Path = SCHEMA_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in generate().items():
        path = directory / f"{name}.json"
        path.write_text(render(schema), encoding="utf-8")
        written.append(path)
    return written


def check(directory: Path = SCHEMA_DIR) -> list[str]:
    """What differs between the committed files and the models (empty: they agree)."""
    problems = []
    wanted = generate()
    for name, schema in wanted.items():
        path = directory / f"{name}.json"
        if not path.exists():
            problems.append(f"{path} is missing")
        elif path.read_text(encoding="utf-8") != render(schema):
            problems.append(f"{path} differs from core/protocol/messages")
    for path in sorted(directory.glob("*.json")):
        if path.stem not in wanted:
            problems.append(f"{path} has no model (remove it)")
    return problems


@functools.lru_cache(maxsize=None)
def _validator(name: str):
    import jsonschema  # test extra: only receivers and tests validate

    path = SCHEMA_DIR / f"{name}.json"
    schema = json.loads(path.read_text(encoding="utf-8")) if path.exists() else generate()[name]
    return jsonschema.Draft202012Validator(schema)


def validate(topic: str, payload: bytes | str | dict) -> list[str]:
    """Problems of one message against the schema of its topic; [] when it is valid."""
    name = parse_topic(topic)
    if name is None:
        return [f"topic {topic!r} is not part of the protocol (canopy/v1/{{site}}/{{gateway}}/<leaf>)"]
    if isinstance(payload, dict):
        obj: Any = payload
    else:
        try:
            obj = limits.parse(payload, _LIMITS[name.leaf])
        except limits.Malformed as exc:
            return [f"{exc.reason}: {exc}"]
    validator = _validator(MESSAGES[name.leaf][0])
    problems = []
    for error in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path))):
        problems.extend(_explain(error))
        if len(problems) >= MAX_PROBLEMS:
            break
    return problems[:MAX_PROBLEMS]


def _explain(error) -> list[str]:
    """A readable line per problem; for a record that matches no type, the errors of the type it claims."""
    where = "/".join(map(str, error.absolute_path)) or "(message)"
    if error.validator in ("oneOf", "anyOf") and error.context and isinstance(error.instance, dict):
        claimed = error.instance.get("type", error.instance.get("kind", error.instance.get("status")))
        branches: dict[int, list] = {}
        for sub in error.context:
            branches.setdefault(sub.relative_schema_path[0], []).append(sub)
        matching = [errs for errs in branches.values()
                    if not any(e.validator == "const" and list(e.relative_path)[-1:] in (["type"], ["kind"], ["status"])
                               for e in errs)]
        if len(matching) == 1:
            return [f"{'/'.join(map(str, e.absolute_path)) or '(message)'} ({claimed}): {e.message}" for e in matching[0]]
        if not matching and claimed is not None:
            return [f"{where}: unknown type {claimed!r}"]
    return [f"{where}: {error.message}"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m core.protocol.schemas", description=__doc__.splitlines()[0])
    group = ap.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", action="store_true", help="regenerate docs/schemas/*.json from the models")
    group.add_argument("--check", action="store_true", help="exit 1 if the committed schemas differ from the models")
    args = ap.parse_args(argv)
    if args.write:
        for path in write():
            print(f"wrote {path}")
        return 0
    problems = check()
    for p in problems:
        print(p, file=sys.stderr)
    if problems:
        print("run `python -m core.protocol.schemas --write` and commit docs/schemas/", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
