"""The records a control writes (``control.switched``, ``control.override``), with their words for people.  Pure.

Both go to the ``event`` lane on ``…/event``: switching a fan is news, never an
alarm.  Each carries ``message_key`` + ``params`` and ``texts``: a ready line in
``en`` and ``zh-CN`` ("Greenhouse 1 fan switched on: temperature 31.2 degC is
above 30 degC"), with dates and time zones where a time is shown.
"""

from __future__ import annotations

from core.records import event_body
from gateway.alerts.texts import LANGS, fmt_time
from gateway.alerts.timeutil import fmt_duration

STATE = {"en": {True: "on", False: "off", None: "unchanged"}, "zh": {True: "开启", False: "关闭", None: "不变"}}
SIDE = {"en": {"above": ("above", "below"), "below": ("below", "above")},
        "zh": {"above": ("高于", "回落至 {limit} 以下"), "below": ("低于", "回升至 {limit} 以上")}}

SWITCHED = {
    "en": {
        "start": "{label} {state} at start ({quantity} {value}, setpoint {setpoint})",
        "setpoint": "{label} switched on: {quantity} {value} is {side} {setpoint}",
        "hysteresis": "{label} switched off: {quantity} {value} is back {back} {limit}",
        "max_run": "{label} switched off after running {max_run}, its maximum; it rests at least {min_off}",
        "outside_hours": "{label} switched off: outside its hours",
        "sensor_stale": "{label} {state}, its safe state: no reading from {sensor} for {stale_after}",
        "sensor_back": "{label} switched {state}: its sensor is back ({quantity} {value})",
        "output_fault": "{label} {state}, its safe state: the output did not confirm",
        "fault_retry": "{label} switched {state}: automatic again after an output fault",
        "override": "{label} switched {state} by {by}, manual until {until}",
        "override_ended": "{label} switched {state}: manual override over, automatic again",
        "restore": "{label} switched {state} again: its feedback showed {feedback}",
    },
    "zh": {
        "start": "{label}启动时{state}（{quantity} {value}，设定值 {setpoint}）",
        "setpoint": "{label}已开启：{quantity} {value}，{side}设定值 {setpoint}",
        "hysteresis": "{label}已关闭：{quantity} {value}，已{back}",
        "max_run": "{label}已连续运行 {max_run}（上限），关闭休息至少 {min_off}",
        "outside_hours": "{label}已关闭：不在运行时段内",
        "sensor_stale": "{label}已{state}（安全状态）：传感器 {sensor} 已 {stale_after} 无读数",
        "sensor_back": "{label}已{state}：传感器恢复（{quantity} {value}）",
        "output_fault": "{label}已{state}（安全状态）：输出未得到确认",
        "fault_retry": "{label}已{state}：输出故障后恢复自动控制",
        "override": "{label}已由 {by} 手动{state}，至 {until}",
        "override_ended": "{label}已{state}：手动控制结束，恢复自动",
        "restore": "{label}已重新{state}：反馈显示为 {feedback}",
    },
}

OVERRIDE = {
    "en": {"set": "{label}: manual {state} by {by} until {until}",
           "cancelled": "{label}: manual override cancelled by {by}; automatic again",
           "expired": "{label}: manual override ended at {until}; automatic again"},
    "zh": {"set": "{label}：{by} 手动{state}，至 {until}",
           "cancelled": "{label}：{by} 取消手动控制，恢复自动",
           "expired": "{label}：手动控制已于 {until} 结束，恢复自动"},
}


def fmt_number(v, unit: str = "") -> str:
    if v is None:
        return "-"
    text = f"{v:.6g}" if isinstance(v, float) else str(v)
    return f"{text} {unit}".strip()


class ControlWords:
    """The words of one control: its label in each language, its sensor, its time zone."""

    def __init__(self, cfg, unit: str, location: dict, tz):
        self.cfg = cfg
        self.unit = unit
        self.location = location
        self.tz = tz

    def _fields(self, lang: str, tag: str, p: dict) -> dict:
        sp, h = p.get("setpoint"), self.cfg.hysteresis
        side, back = SIDE[lang][self.cfg.on_when]
        limit = None if sp is None else (sp - h if self.cfg.on_when == "above" else sp + h)
        return {
            "label": self.cfg.label(tag), "state": STATE[lang][p.get("on")], "quantity": self.cfg.sensor.point,
            "value": fmt_number(p.get("value"), self.unit), "setpoint": fmt_number(sp, self.unit),
            "side": side, "limit": fmt_number(limit, self.unit), "sensor": f"{self.cfg.sensor.device}/{self.cfg.sensor.point}",
            "back": back.format(limit=fmt_number(limit, self.unit)),
            "max_run": fmt_duration(self.cfg.max_run or 0, lang), "min_off": fmt_duration(self.cfg.min_off, lang),
            "stale_after": fmt_duration(p.get("stale_after") or 0, lang), "by": p.get("by") or "",
            "until": fmt_time(p["until"], self.tz, lang) if p.get("until") else "", "feedback": fmt_number(p.get("feedback")),
        }

    def texts(self, table: dict, key: str, p: dict) -> dict[str, str]:
        return {tag: table[lang][key].format(**self._fields(lang, tag, p)) for tag, lang in LANGS}

    def switched(self, ts: float, *, on: bool, previous: bool | None, value, reason: str, mode: str, reading: dict | None,
                 setpoint: float | None, by: str | None = None, until: float | None = None, stale_after: float | None = None,
                 feedback=None) -> bytes:
        """A ``control.switched`` body."""
        params = {"control": self.cfg.id, "on": on, "value": reading["value"] if reading else None, "unit": self.unit,
                  "setpoint": setpoint, "hysteresis": self.cfg.hysteresis, "by": by, "until": until,
                  "stale_after": stale_after, "feedback": feedback}
        out = self.cfg.output
        return event_body(ts, "control.switched", control=self.cfg.id, kind=self.cfg.kind, device=out.device, point=out.point,
                          state="on" if on else "off", previous=None if previous is None else ("on" if previous else "off"),
                          value=value, reason=reason, mode=mode, reading=reading, setpoint=setpoint,
                          hysteresis=self.cfg.hysteresis, by=by, until=until, location=self.location,
                          message_key=f"control.switched.{reason}", params=_plain(params),
                          texts=self.texts(SWITCHED, reason, params))

    def override(self, ts: float, *, state: str, until: float | None, by: str | None, ended: str | None = None) -> bytes:
        """A ``control.override`` body: ``state`` on/off/auto; ``ended`` expired or cancelled when it ends one."""
        key = ended or "set"
        params = {"control": self.cfg.id, "on": {"on": True, "off": False}.get(state), "by": by, "until": until}
        return event_body(ts, "control.override", control=self.cfg.id, kind=self.cfg.kind, state=state, until=until, by=by,
                          ended=ended, location=self.location, message_key=f"control.override.{key}", params=_plain(params),
                          texts=self.texts(OVERRIDE, key, params))


def _plain(p: dict) -> dict:
    return {k: v for k, v in p.items() if v is None or isinstance(v, (str, int, float, bool))}
