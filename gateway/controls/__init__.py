"""Local closed loops (docs/controls.md): a fan on temperature, a heater, a mister, with hysteresis.

Apart from alerts: switching is an ``event``-lane record (``control.switched``),
never an alarm, and no ack can touch it; a control's own failure (output not
confirmed, sensor stale) is raised as an alert through the alert engine.

- ``config.py``: the ``controls:`` section; ``checks.py``: its cross-checks;
- ``loop.py``: the pure decisions (a state dataclass, ``decide(spec, state, now)``);
- ``control.py``: one control at run time; ``outputs.py``: its writes;
- ``records.py``: ``control.switched`` / ``control.override`` and their words;
- ``overrides.py``: manual overrides kept across restarts;
- ``service.py``: the async runner the runtime starts.
"""

from gateway.controls.checks import validate_controls
from gateway.controls.config import ControlConfig

__all__ = ["ControlConfig", "validate_controls"]
