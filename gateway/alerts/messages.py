"""Human messages for alerts, in English or Simplified Chinese (``site.language``).

Each rule type has a default template; a rule (or an incident) may give its
own (``message: {en: ..., zh: ...}``) with the same placeholders (listed in
docs/alerts.md and checked when the config is loaded).  ``{label}`` is what
people call the device (its ``labels`` in the config), ``{place}`` where it is,
the zone first ("e-bike shed, building 3").
"""

from __future__ import annotations

import logging
import string

from gateway.alerts.timeutil import fmt_duration

log = logging.getLogger("canopy.alerts")

SEVERITY = {
    "en": {"critical": "CRITICAL", "warning": "WARNING", "info": "INFO"},
    "zh": {"critical": "紧急", "warning": "警告", "info": "提示"},
}

DEFAULTS = {
    "en": {
        "threshold.above": "{device} {point} is {value}, above {threshold}{where_sep}{where}",
        "threshold.below": "{device} {point} is {value}, below {threshold}{where_sep}{where}",
        "rate.rise": "{device} {point} rose by {change} within {window} (now {value}){where_sep}{where}",
        "rate.fall": "{device} {point} fell by {change} within {window} (now {value}){where_sep}{where}",
        "state": "{device} {point} is now {value}{where_sep}{where}",
        "flow": "Water running without a pause for {duration} ({device}): a tap left running or a leak{where_sep}{where}",
        "inactivity": "Welfare check: no activity for {duration}; please call or visit{where_sep}{where}",
        "stale": "{device} has sent no valid reading for {duration}{where_sep}{where}",
        "all": "{rule}: {components}{where_sep}{where}",
        "any": "{rule}: {components}{where_sep}{where}",
        "camera.fall": "Possible fall ({device}): please check at once{where_sep}{where}",
        "control.failed": "{label} did not switch {expected} (feedback: {value}): check the device{where_sep}{where}",
        "control.sensor_stale": "{label}: no reading from its sensor for {duration}; output set to its safe state{where_sep}{where}",
        "external": "{rule} ({device}){where_sep}{where}",
    },
    "zh": {
        "threshold.above": "{where}{where_sep}{device} {point} 为 {value}，高于 {threshold}",
        "threshold.below": "{where}{where_sep}{device} {point} 为 {value}，低于 {threshold}",
        "rate.rise": "{where}{where_sep}{device} {point} 在 {window} 内上升 {change}（当前 {value}）",
        "rate.fall": "{where}{where_sep}{device} {point} 在 {window} 内下降 {change}（当前 {value}）",
        "state": "{where}{where_sep}{device} {point} 变为 {value}",
        "flow": "{where}用水已连续 {duration} 未停（{device}），可能未关水龙头或漏水",
        "inactivity": "关爱提醒：{where}已 {duration} 无活动，请电话联系或上门查看",
        "stale": "{where}{where_sep}{device} 已 {duration} 无有效数据",
        "all": "{where}{where_sep}{rule}：{components}",
        "any": "{where}{where_sep}{rule}：{components}",
        "camera.fall": "{where}{where_sep}疑似有人跌倒（{device}），请立即查看",
        "control.failed": "{where}{where_sep}{label}未能{expected}（反馈：{value}），请检查设备",
        "control.sensor_stale": "{where}{where_sep}{label}：传感器已 {duration} 无读数，输出已置于安全状态",
        "external": "{where}{where_sep}{rule}（{device}）",
    },
}

RAISED = {"en": "[{severity}] {body}", "zh": "【{severity}】{body}"}
TAGS = {"en": "en", "zh": "zh-CN"}  # message language -> label language tag
SWITCHED = {"en": {True: "on", False: "off"}, "zh": {True: "开启", False: "关闭"}}
RESOLVED = {"en": "Resolved: {body}", "zh": "【已解除】{body}"}


def where(location: dict, lang: str) -> str:
    """Building 3, unit 1, household 101 / 3栋1单元101室."""
    b, u, h, g, z = (location.get(k) for k in ("building", "unit", "household", "grid", "zone"))
    if lang == "zh":
        text = "".join(x for x in (f"{b}栋" if b else "", f"{u}单元" if u else "", f"{h}室" if h else "") if x)
        extra = " ".join(x for x in (f"网格{g}" if g else "", z or "") if x)
        return text + (" " if text and extra else "") + extra
    parts = [f"building {b}" if b else "", f"unit {u}" if u else "", f"household {h}" if h else "",
             f"grid {g}" if g else "", z or ""]
    return ", ".join(p for p in parts if p)


def place(location: dict, lang: str) -> str:
    """Where, as people say it: the zone first -- "e-bike shed, building 3" / "3栋 e-bike shed"."""
    rest = {k: v for k, v in location.items() if k not in ("zone", "grid")}
    zone = location.get("zone") or ""
    if lang == "zh":
        return " ".join(x for x in (where(rest, lang), zone) if x)
    return ", ".join(x for x in (zone, where(rest, lang)) if x)


def label(facts: dict, labels: dict | None, lang: str) -> str:
    """What people call the thing: ``label:{tag}`` in the facts (a control's), its device's label, else its id."""
    tag = TAGS[lang]
    if facts.get(f"label:{tag}"):
        return str(facts[f"label:{tag}"])
    for t, text in (labels or {}).items():
        if t == tag or t.split("-")[0] == tag.split("-")[0]:
            return text
    return str(facts.get("label") or facts.get("control") or facts.get("device") or "")


def _fmt_value(v, unit: str, lang: str) -> str:
    if isinstance(v, bool):
        return ("是" if v else "否") if lang == "zh" else ("on" if v else "off")
    if isinstance(v, float):
        v = f"{v:.6g}"
    return f"{v} {unit}".strip() if unit else str(v)


class _Fields(dict):
    def __missing__(self, key):  # unknown or absent placeholders render empty, never raise
        return ""


def template_key(rule_spec) -> str:
    t = rule_spec.type
    if t == "threshold":
        return "threshold.above" if rule_spec.above is not None else "threshold.below"
    if t == "rate":
        return "rate.rise" if rule_spec.rise is not None else "rate.fall"
    if t == "external":
        return rule_spec.id if rule_spec.id in DEFAULTS["en"] else "external"
    return t


def fields_for(rule_spec, facts: dict, location: dict, severity: str, lang: str, labels: dict | None = None) -> dict:
    unit = facts.get("unit") or ""
    f = _Fields(
        rule=rule_spec.id,
        severity=SEVERITY[lang][severity],
        device=facts.get("device", ""),
        point=facts.get("point", ""),
        value=_fmt_value(facts["value"], unit, lang) if "value" in facts else "",
        unit=unit,
        threshold=_fmt_value(facts["threshold"], unit, lang) if facts.get("threshold") is not None else "",
        change=_fmt_value(facts["change"], unit, lang) if "change" in facts else "",
        window=fmt_duration(facts["window"], lang) if "window" in facts else "",
        duration=fmt_duration(facts["duration"], lang) if "duration" in facts else "",
        to=_fmt_value(facts["to"], "", lang) if "to" in facts else "",
        components=facts.get("components", ""),
        where=where(location, lang),
        place=place(location, lang),
        label=label(facts, labels, lang),
        control=facts.get("control", ""),
        expected=SWITCHED[lang][bool(facts["expected"])] if "expected" in facts else "",
        **{k: location.get(k) or "" for k in ("site", "building", "household", "grid", "zone")},
    )
    if not f["household"] and facts.get("household"):
        f["household"] = facts["household"]
    f["where_sep"] = (" " if lang == "zh" else " at ") if f["where"] else ""
    return f


def render_body(rule_spec, facts: dict, location: dict, severity: str, lang: str, labels: dict | None = None) -> str:
    lang = "zh" if lang.startswith("zh") else "en"
    f = fields_for(rule_spec, facts, location, severity, lang, labels)
    custom = getattr(rule_spec.message, lang, None) if rule_spec.message is not None else None
    if custom:
        try:
            return string.Formatter().vformat(custom, (), f).strip()
        except (ValueError, KeyError, IndexError, AttributeError, TypeError) as exc:
            log.warning("rule %s: message template failed (%s); using the default", rule_spec.id, exc)
    return DEFAULTS[lang][template_key(rule_spec)].format_map(f).strip()


def render(rule_spec, facts: dict, location: dict, severity: str, lang: str, resolved: bool = False,
           labels: dict | None = None) -> str:
    lang = "zh" if lang.startswith("zh") else "en"
    body = render_body(rule_spec, facts, location, severity, lang, labels)
    if resolved:
        return RESOLVED[lang].format(body=body)
    return RAISED[lang].format(severity=SEVERITY[lang][severity], body=body)
