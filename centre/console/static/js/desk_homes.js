// The duty desk's households panel (people living alone): when each home last used its door, water and power,
// a loud mark on a home that is quiet for too long, has an open welfare alert, or cannot be seen (gateway
// offline); and the responder's door unlock -- a dialog with a required reason (recorded by the centre first),
// then the unlock itself through the acting API, signed for this person, its result in words.

import { api, can, el, fmtTime, now, t } from "./core.js";
import {
  HOME_KINDS, homeMarks, homeName, intentWords, lockName, lockReasonWords, signWords, whereParts,
} from "./words.js";

const RELOAD_MS = 60000; // the marks age by themselves: read again every minute
const h = { list: [], unlocks: new Map(), failed: null, asking: null, timer: null, timerAt: 0, gateways: new Map() };
const enc = encodeURIComponent;
const lockKey = (site, gateway, lock) => `${site}/${gateway}/${lock}`;

// ---- reading ----------------------------------------------------------------------------------------------

export async function loadHomes() {
  try {
    h.list = await api("/api/households");
    h.failed = null;
  } catch (e) {
    h.failed = e.status === 403 ? "forbidden" : e.message;
  }
  renderHomes();
}

// coalesced; a sooner deadline wins (a gateway going offline must not wait behind a stream of readings)
function reloadSoon(ms = 2000) {
  const at = Date.now() + ms;
  if (h.timer && h.timerAt <= at) return;
  clearTimeout(h.timer);
  h.timerAt = at;
  h.timer = setTimeout(() => { h.timer = null; loadHomes(); }, ms);
}

// the live stream: a reading of a household's device, a result of one of our unlocks, a gateway's state
export function onHomeEvent(channel, d) {
  if (channel === "reading") {
    const mine = new Set(h.list.flatMap((x) => x.devices.map((dev) => `${x.site}/${dev.gateway}/${dev.device}`)));
    if ((d.readings || []).some((r) => mine.has(`${d.site}/${d.gateway}/${r.device}`))) reloadSoon();
  } else if (channel === "command" && d.kind === "command" && [...h.unlocks.values()].some((i) => i.id === d.id)) {
    refreshUnlock(d.id);
  } else if (channel === "gateway") {
    reloadSoon(500);
  }
}

async function refreshUnlock(id) {
  try {
    const i = await api(`/api/intents/${enc(id)}`);
    h.unlocks.set(lockKey(i.site, i.gateway, i.target), i);
    renderHomes();
  } catch { /* not ours to see */ }
}

// ---- showing ----------------------------------------------------------------------------------------------

export function renderHomes(gateways) {
  if (gateways) h.gateways = gateways;
  const box = document.getElementById("home-list");
  if (!box) return;
  const was = document.activeElement?.closest?.("[data-home]") ? {
    home: document.activeElement.closest("[data-home]").dataset.home, lock: document.activeElement.dataset.lock } : null;
  const section = document.getElementById("homes");
  section.hidden = h.failed === "forbidden";
  box.replaceChildren(...h.list.map(homeCard));
  const empty = document.getElementById("homes-empty");
  empty.hidden = h.list.length > 0 && !h.failed;
  empty.textContent = h.failed && h.failed !== "forbidden" ? t("desk.homes_failed", { detail: h.failed }) : t("desk.homes_empty");
  if (was && !document.activeElement?.closest?.("[data-home]")) {
    const card = box.querySelector(`[data-home="${CSS.escape(was.home)}"]`);
    (card?.querySelector(`[data-lock="${CSS.escape(was.lock || "")}"]`) || card?.querySelector("button"))?.focus();
  }
}

function homeCard(x) {
  const nowS = now(), marks = homeMarks(x, nowS), id = `home-${x.site}-${x.household}`.replace(/[^A-Za-z0-9_-]/g, "_");
  const kinds = [...new Set(marks.map((m) => m.kind))];
  const where = [x.site, ...whereParts(x.location, null)].join(" · ");
  return el("li", { class: `home ${kinds.map((k) => `is-${k}`).join(" ")} ${marks.length ? "" : "fine"}`,
    "data-home": `${x.site}/${x.household}`, "aria-labelledby": `${id}-name` },
    el("h3", { class: "home-name", id: `${id}-name` }, homeName(x)),
    el("p", { class: "home-place" }, where),
    marks.map((m) => el("p", { class: `home-mark ${m.kind}` }, m.text)),
    marks.length ? null : el("p", { class: "home-mark ok" }, x.watching_since && !x.last_activity
      ? t("desk.home_watching", { time: fmtTime(x.watching_since) })
      : t("desk.home_ok", { ago: signWords(x, latestKind(x)) })),
    el("dl", { class: "signs" }, HOME_KINDS.flatMap((k) => [
      el("dt", {}, t(`desk.kind_${k}`)), el("dd", { class: x.activity?.[k] ? "seen" : "none" }, signWords(x, k))])),
    (x.locks || []).map((lock) => lockRow(x, lock, id)));
}

function latestKind(x) {
  return HOME_KINDS.filter((k) => x.activity?.[k]).sort((a, b) => x.activity[b].ts - x.activity[a].ts)[0] || "door";
}

function lockRow(x, lock, id) {
  const intent = h.unlocks.get(lockKey(x.site, lock.gateway, lock.lock));
  return el("div", { class: "lock-row" },
    can("doors.control") ? el("button", { type: "button", class: "secondary big", "data-lock": lock.lock,
      "aria-describedby": `${id}-name`, onclick: () => askUnlock(x, lock) }, t("desk.unlock", { lock: lockName(lock) })) : null,
    intent ? unlockLine(intent, lock) : null);
}

function unlockLine(i, lock) {
  const label = t("desk.unlock_label", { lock: lockName(lock) });
  if (i.status === "refused_here") {
    return el("p", { class: "intent refused", role: "status" }, label, " ", t("intent.not_sent", { detail: i.detail }));
  }
  const words = ["rejected", "failed"].includes(i.status)
    ? { kind: "refused", text: t(`intent.${i.status}`, { reason: lockReasonWords(i.reason) }), detail: i.detail }
    : intentWords(i, h.gateways.get(`${i.site}/${i.gateway}`));
  return el("div", { class: `intent ${words.kind}`, role: "status" },
    el("p", {}, label, " ", words.text),
    words.detail && words.kind === "refused" ? el("p", { class: "detail" }, words.detail) : null);
}

// ---- the unlock: confirm, say why, send ----------------------------------------------------------------------

function askUnlock(x, lock) {
  const dlg = document.getElementById("unlock-dialog");
  h.asking = { x, lock, back: document.activeElement };
  document.getElementById("unlock-what").textContent =
    [homeName(x), lockName(lock), ...whereParts(x.location, null)].join(" · ");
  document.getElementById("unlock-warning").textContent = t("desk.unlock_warning", { s: lock.relock_after_s ?? "?" });
  document.getElementById("unlock-reason").value = "";
  document.getElementById("unlock-error").textContent = "";
  dlg.returnValue = "";
  dlg.showModal();
  document.getElementById("unlock-reason").focus();
}

function onSubmit(e) {
  const reason = document.getElementById("unlock-reason");
  if (e.submitter?.value === "confirm" && reason.value.trim().length < 3) {
    e.preventDefault();
    document.getElementById("unlock-error").textContent = t("desk.unlock_reason_missing");
    reason.focus();
  }
}

async function onClosed() {
  const dlg = document.getElementById("unlock-dialog"), job = h.asking;
  h.asking = null;
  if (!job) return;
  const { x, lock, back } = job, key = lockKey(x.site, lock.gateway, lock.lock);
  if (dlg.returnValue === "confirm") {
    const reason = document.getElementById("unlock-reason").value.trim();
    try {
      await api(`/api/households/${enc(x.site)}/${enc(x.household)}/unlock-reason`, { method: "POST",
        body: { gateway: lock.gateway, lock: lock.lock, reason } });
      const i = await api("/api/commands", { method: "POST",
        body: { site: x.site, gateway: lock.gateway, action: "unlock", target: lock.lock, params: {} } });
      h.unlocks.set(key, i);
    } catch (e) {
      h.unlocks.set(key, { status: "refused_here", detail: e.message });
    }
    renderHomes();
  }
  const card = document.querySelector(`[data-home="${CSS.escape(`${x.site}/${x.household}`)}"]`);
  (card?.querySelector(`[data-lock="${CSS.escape(lock.lock)}"]`) || back)?.focus();
}

export function setupHomes() {
  document.getElementById("unlock-form").addEventListener("submit", onSubmit);
  document.getElementById("unlock-dialog").addEventListener("close", onClosed);
  setInterval(loadHomes, RELOAD_MS);
}
