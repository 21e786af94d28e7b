// The duty desk's pieces of screen: one alert card, its timeline, a gateway row.  Pure builders: they
// read the desk's state and return elements; desk.js decides when to build them.

import { can, el, fmtAgo, fmtCountdown, fmtTime, now, t } from "./core.js";
import {
  gatewayTrouble, gatewayWords, intentWords, needsAck, nextStep, severityWord, statusWords, timelineWords,
  whatHappened, whereParts,
} from "./words.js";

export const keyOf = (a) => `${a.site}/${a.gateway}/${a.alert}`;
export const gwKey = (x) => `${x.site}/${x.gateway}`;

let ids = 0;

// everything a card shows: when this string changes, the card is built again
export function cardVersion(a, desk) {
  const k = keyOf(a), i = desk.intents.get(k), g = desk.gateways.get(gwKey(a));
  return [g ? gatewayTrouble(g, now()) : "", a.updated_at, a.status, a.severity, a.acked_by, a.next_escalation_at, a.step, i?.id, i?.status,
    desk.open.has(k), desk.timelines.get(k)?.length, desk.metas.has(gwKey(a)), desk.lang].join("|");
}

export function card(a, desk, handlers) {
  const k = keyOf(a), meta = desk.metas.get(gwKey(a)), id = `alert-${++ids}`;
  const what = whatHappened(a, meta);
  const where = whereParts(a.location, meta);
  const step = nextStep(a, meta);
  const intent = desk.intents.get(k);
  const sev = a.severity || "none";
  const gw = desk.gateways.get(gwKey(a)), trouble = gw ? gatewayTrouble(gw, now()) : null;
  return el("li", { class: `alert sev-${sev} st-${a.status}`, "data-key": k, "aria-labelledby": `${id}-what` },
    el("div", { class: "alert-head" },
      el("span", { class: `badge sev-${sev}` }, severityWord(a.severity)),
      el("span", { class: "site" }, `${a.site} / ${a.gateway}`),
      el("span", { class: "raised" }, t("alert.raised_at", { time: fmtTime(a.raised_at), ago: fmtAgo(a.raised_at) }))),
    el("h3", { class: "what", id: `${id}-what` }, what.text),
    what.original ? el("p", { class: "original" }, t("alert.original", { text: what.original })) : null,
    el("p", { class: "where" }, el("span", { class: "label" }, t("alert.where")), " ",
      where.length ? where.join(" · ") : t("where.unknown")),
    el("p", { class: "state" }, statusWords(a, meta)),
    trouble ? el("p", { class: "gw-warning" }, t("alert.gateway_trouble", { state: t(`alert.gw_${trouble}`) })) : null,
    step ? el("p", { class: "countdown", "data-at": String(step.at), "data-group": step.group || "" },
      countdownText(step.at, step.group || "")) : null,
    intent ? intentLine(intent, desk) : null,
    actions(a, k, id, desk, handlers),
    desk.open.has(k) ? timeline(desk.timelines.get(k), meta, id) : null);
}

export function countdownText(at, group) {
  const left = at - now();
  if (left <= 0) return t("alert.escalation_due");
  const params = { left: fmtCountdown(left), group };
  return group ? t("alert.escalates_in", params) : t("alert.escalates_next_in", params);
}

function intentLine(intent, desk) {
  if (intent.status === "refused_here") {
    return el("p", { class: "intent refused", role: "status" }, t("intent.not_sent", { detail: intent.detail }));
  }
  const words = intentWords(intent, desk.gateways.get(gwKey(intent)));
  const who = intent.on_behalf_of && intent.on_behalf_of !== desk.me ? `${intent.on_behalf_of}: ` : "";
  return el("p", { class: `intent ${words.kind}`, role: "status" },
    t(intent.action === "resolve" ? "intent.resolve_label" : "intent.ack_label"), " ", who, words.text);
}

function actions(a, k, id, desk, handlers) {
  const row = el("div", { class: "actions" });
  const about = `${id}-what`;
  if (needsAck(a) && can("alerts.ack")) {
    row.append(el("button", { type: "button", class: "primary big", "data-action": "ack", "aria-describedby": about,
      onclick: () => handlers.ack(a, false) }, t("action.ack")));
  }
  if (a.status !== "resolved" && can("alerts.resolve")) {
    row.append(el("button", { type: "button", class: "secondary big", "data-action": "resolve",
      "aria-describedby": about, onclick: () => handlers.ack(a, true) }, t("action.resolve")));
  }
  const open = desk.open.has(k);
  row.append(el("button", { type: "button", class: "secondary big", "data-action": "timeline", "aria-expanded": String(open),
    "aria-describedby": about, onclick: () => handlers.timeline(a) }, t(open ? "action.hide_timeline" : "action.timeline")));
  return row;
}

function timeline(items, meta, id) {
  if (!items) return el("p", { class: "timeline loading" }, t("timeline.loading"));
  return el("ol", { class: "timeline", "aria-label": t("timeline.title"), id: `${id}-timeline` },
    items.map((i) => el("li", {}, el("time", {}, fmtTime(i.ts)), " ", timelineWords(i, meta))));
}

export function gatewayRow(g) {
  const nowS = now(), trouble = gatewayTrouble(g, nowS);
  return el("li", { class: `gw ${trouble ? `trouble ${trouble}` : "ok"}` },
    el("span", { class: "gw-name" }, `${g.site} / ${g.gateway}`),
    el("span", { class: "gw-state" }, gatewayWords(g, nowS)));
}

export function sortGateways(list) {
  const nowS = now();
  return list.sort((a, b) => (gatewayTrouble(b, nowS) ? 1 : 0) - (gatewayTrouble(a, nowS) ? 1 : 0)
    || a.site.localeCompare(b.site) || a.gateway.localeCompare(b.gateway));
}
