// Alerts, places, gateways and results in people's words, in the person's language.
//
// An alert's words come, in order of preference, from the record's own ready line in this language
// (`texts`), from its `message` when that is in this language, and otherwise from the catalogue
// (its class and what people call the device).  Rule ids are never the main text.

import { fmtAgo, fmtTime, state, t } from "./core.js";
import "./language.js"; // every page that shows words keeps the person's language switch in their account

const SEVERITY_RANK = { critical: 0, warning: 1, info: 2 };
const SILENT_S = 300; // an "online" gateway unheard for this long is shown as silent

export function label(labels, fallback) {
  if (!labels || typeof labels !== "object") return fallback;
  return labels[state.lang] || labels[state.lang.split("-")[0]] || fallback;
}

function known(key, params) {
  const s = t(key, params);
  return s === key ? null : s;
}

export function deviceLabel(meta, id) { return id ? label(meta?.devices?.[id]?.labels, id) : null; }

export function groupLabel(meta, g) { return label(meta?.groups?.[g]?.labels, known(`group.${g}`) || g); }

export function severityWord(sev) { return known(`severity.${sev}`) || sev || t("severity.unknown"); }

export function severityRank(sev) { return SEVERITY_RANK[sev] ?? 3; }

// building 3 · unit 1 · household 101 (the Li household) · grid G7 · e-bike shed
export function whereParts(loc, meta) {
  if (!loc || typeof loc !== "object") return [];
  const parts = [];
  for (const k of ["building", "unit", "household", "grid"]) {
    if (!loc[k]) continue;
    let part = t(`where.${k}`, { v: loc[k] });
    if (k === "household") {
      const name = label(meta?.households?.[loc[k]]?.labels, null);
      if (name) part += ` (${name})`;
    }
    parts.push(part);
  }
  if (loc.zone) parts.push(String(loc.zone));
  return parts;
}

const PREFIX = /^\s*(\[[A-Z]+\]|【[^】]{1,8}】)\s*/; // the severity in front of a gateway's line: we show a badge

function lineIn(texts) {
  if (!texts || typeof texts !== "object") return null;
  return texts[state.lang] || null;
}

function sameLanguage(a, b) { return !!a && !!b && a.split("-")[0] === b.split("-")[0]; }

// what happened, in words: {text, original} (original: the gateway's line in another language, if any)
export function whatHappened(a, meta) {
  const own = lineIn(a.texts);
  if (own) return { text: own.replace(PREFIX, ""), original: null };
  if (a.message && sameLanguage(a.lang, state.lang)) return { text: a.message.replace(PREFIX, ""), original: null };
  const what = known(`class.${a.class}`) || t("class.other");
  const device = deviceLabel(meta, a.device) || (a.subject && a.subject !== "*" ? a.subject : null);
  const text = device ? t("alert.what_device", { what, device }) : what;
  const original = a.message || (a.texts && (a.texts.en || a.texts["zh-CN"])) || null;
  return { text, original: original ? original.replace(PREFIX, "") : null };
}

// where the alert stands now, in words
export function statusWords(a, meta) {
  if (a.status === "resolved") return t("status.resolved", { time: fmtTime(a.resolved_at) });
  if (a.status === "acknowledged" || a.acked_by) {
    const note = a.ack_note ? t("status.note", { note: a.ack_note }) : "";
    return t("status.acknowledged", { by: a.acked_by || "?", time: fmtTime(a.acked_at) }) + note;
  }
  const groups = Array.isArray(a.groups) ? a.groups : [];
  if (a.status === "escalated" && groups.length) {
    return t("status.escalated", { group: groupLabel(meta, groups[groups.length - 1]) });
  }
  return t("status.raised");
}

export function isOpen(a) { return a.status !== "resolved"; }

export function needsAck(a) { return a.status === "raised" || a.status === "escalated"; }

// the next escalation step: {at, group} or null (acknowledged, or the end of the chain)
export function nextStep(a, meta) {
  if (!needsAck(a) || typeof a.next_escalation_at !== "number") return null;
  const chain = meta?.chains?.[a.class];
  const step = Array.isArray(chain) ? chain[(a.step ?? 0) + 1] : null;
  return { at: a.next_escalation_at, group: step ? groupLabel(meta, step.group) : null };
}

// one timeline item: "22:14 raised -> property office", "acknowledged by wang: on my way"
export function timelineWords(item, meta) {
  const who = item.actor || "";
  const group = item.group ? groupLabel(meta, item.group) : (item.groups?.length ? groupLabel(meta, item.groups.at(-1)) : "");
  const type = (item.type || "").replace("alert.", "");
  let text = known(`timeline.${type}`, { group, by: who }) || type;
  if (item.recipients?.length) text += t("timeline.recipients", { who: item.recipients.join(", ") });
  if (item.note) text += t("status.note", { note: item.note });
  return text;
}

// ---- gateways ------------------------------------------------------------------------------------------

export function gatewayTrouble(g, nowS) {
  if (g.status === "offline") return "offline";
  if (g.status !== "online") return "unknown";
  if (typeof g.last_seen === "number" && nowS - g.last_seen > SILENT_S) return "silent";
  return null;
}

export function gatewayWords(g, nowS) {
  const trouble = gatewayTrouble(g, nowS);
  const reason = g.reason ? known(`gwreason.${g.reason}`) || g.reason : null;
  if (trouble === "offline") {
    return t("gateway.offline", { since: fmtTime(g.status_since), reason: reason ? ` (${reason})` : "" });
  }
  if (trouble === "silent") return t("gateway.silent", { ago: fmtAgo(g.last_seen) });
  if (trouble === "unknown") return t("gateway.unknown");
  return t("gateway.online", { ago: fmtAgo(g.last_seen) });
}

// ---- results of what people asked for -----------------------------------------------------------------

export function reasonWords(reason, result) {
  if (reason === "interlock" && result?.interlock) {
    return known(`interlock.${result.interlock}`) || t("reason.interlock");
  }
  return known(`reason.${reason}`) || reason || "";
}

// {text, detail, kind}: kind is done | waiting | refused (the colour)
export function intentWords(i, gateway) {
  const detail = i.detail || null;
  switch (i.status) {
    case "pending":
      if (gateway && gateway.status !== "online") {
        return { kind: "waiting", detail, text: t("intent.pending_offline", {
          gateway: gateway.gateway, since: fmtTime(gateway.status_since) }) };
      }
      return { kind: "waiting", detail, text: t("intent.pending") };
    case "sent": return { kind: "waiting", detail, text: t("intent.sent", { until: fmtTime(i.valid_until) }) };
    case "accepted": return { kind: "waiting", detail, text: t("intent.accepted") };
    case "executed": return { kind: "done", detail, text: t("intent.executed", { time: fmtTime(i.result_at) }) };
    case "expired": return { kind: "refused", detail, text: t("intent.expired", { time: fmtTime(i.valid_until) }) };
    case "rejected":
    case "failed":
      return { kind: "refused", detail, text: t(`intent.${i.status}`, { reason: reasonWords(i.reason, i.result) }) };
    default: return { kind: "waiting", detail, text: i.status || "" };
  }
}

// ---- households (the duty desk's welfare panel) ------------------------------------------------------------

export const HOME_KINDS = ["door", "water", "power"];

// a span of time in words: "14 h", "3 days", "25 min"
export function fmtSpan(seconds) {
  const s = Math.max(0, seconds);
  if (s < 3600) return t("desk.span_min", { n: Math.max(1, Math.round(s / 60)) });
  if (s < 2 * 86400) return t("desk.span_h", { n: Math.floor(s / 3600) });
  return t("desk.span_d", { n: Math.floor(s / 86400) });
}

// "Household 101 (the Li household)"
export function homeName(h) {
  const name = label(h.labels, null), base = t("where.household", { v: h.household });
  return name ? `${base} (${name})` : base;
}

export function lockName(lock) { return label(lock.labels, lock.lock); }

// what needs the desk's eye, most urgent first: [{kind: welfare | quiet | blind, text}]
export function homeMarks(h, nowS) {
  const marks = [];
  if (h.welfare_alerts?.length) {
    marks.push({ kind: "welfare", text: t("desk.home_welfare", { time: fmtTime(h.welfare_alerts[0].raised_at) }) });
  }
  const down = (h.gateways || []).find((g) => g.status !== "online");
  if (h.blind && down) {
    marks.push({ kind: "blind", text: t("desk.home_blind_offline", { gateway: down.gateway, time: fmtTime(down.status_since) }) });
  } else if (h.blind) {
    const heard = (h.devices || []).map((d) => d.last_heard).filter((x) => typeof x === "number");
    marks.push({ kind: "blind", text: t("desk.home_blind_silent",
      { span: fmtSpan(heard.length ? nowS - Math.max(...heard) : h.window_s) }) });
  }
  if (h.quiet && !h.blind) { // blind: quiet there means nothing
    marks.push({ kind: "quiet", text: typeof h.last_activity === "number"
      ? t("desk.home_quiet", { span: fmtSpan(nowS - h.last_activity), time: fmtTime(h.last_activity) })
      : t("desk.home_quiet_none", { span: fmtSpan(h.window_s) }) });
  }
  return marks;
}

// one kind's line: "40 min ago (6 Dec, 21:30 GMT+8)", "not used in the last 2 days", "no sensor"
export function signWords(h, kind) {
  const sign = h.activity?.[kind];
  if (sign) return t("desk.sign_at", { ago: fmtAgo(sign.ts), time: fmtTime(sign.ts) });
  if (!(h.sensors || []).includes(kind)) return t("desk.sign_no_sensor");
  return t("desk.sign_none", { span: fmtSpan(h.window_s) });
}

// a lock's refusal in words: the lock's own words first, then the shared ones
export function lockReasonWords(reason, result) {
  return known(`desk.lock_reason.${reason}`) || reasonWords(reason, result);
}
