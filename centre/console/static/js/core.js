// What every console page shares: the API with its CSRF token, the words of the person's language,
// the red banners, the header (who, language, log out), times for people, and a tiny DOM builder.
// Text from gateways is only ever put into the page as text (never as HTML): see el().

export const state = { me: null, lang: "en", words: {}, fallback: {}, clockOffset: 0 };
export const events = new EventTarget();
export const LANGUAGES = ["en", "zh-CN"];

export class ApiError extends Error {
  constructor(status, detail, code) {
    super(detail);
    this.status = status;
    this.code = code;
  }
}

function cookie(name) {
  const hit = document.cookie.split("; ").find((c) => c.startsWith(name + "="));
  return hit ? decodeURIComponent(hit.slice(name.length + 1)) : "";
}

// fetch JSON from the centre; a refusal throws ApiError with the API's own words (detail)
export async function api(path, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET") headers["X-CSRF-Token"] = state.me?.csrf || cookie("canopy_csrf");
  let res;
  try {
    res = await fetch(path, { method, headers, credentials: "same-origin", cache: "no-store",
      body: body === undefined ? undefined : JSON.stringify(body) });
  } catch {
    throw new ApiError(0, t("error.network"), "network");
  }
  let data = null;
  try { data = await res.json(); } catch { data = null; }
  if (!res.ok) {
    const err = new ApiError(res.status, data?.detail || res.statusText, data?.error);
    if (res.status === 401 && !path.endsWith("/login")) events.dispatchEvent(new CustomEvent("session-ended"));
    throw err;
  }
  return data;
}

// ---- words ---------------------------------------------------------------------------------------------

const catalogues = new Map(); // lang -> Promise of its words: each fetched once

function catalogue(lang) {
  if (!catalogues.has(lang)) {
    catalogues.set(lang, fetch(`/console/i18n/${lang}.json`, { credentials: "same-origin" })
      .then((res) => (res.ok ? res.json() : {})).catch(() => ({})));
  }
  return catalogues.get(lang);
}

export async function setLanguage(lang) {
  state.lang = LANGUAGES.includes(lang) ? lang : "en";
  state.fallback = Object.keys(state.fallback).length ? state.fallback : await catalogue("en");
  state.words = state.lang === "en" ? state.fallback : await catalogue(state.lang);
  document.documentElement.lang = state.lang;
  applyWords(document);
  banners.reword();
  events.dispatchEvent(new CustomEvent("language"));
}

// the person's language: their choice on this browser, else their account's
export function preferredLanguage(me) {
  const chosen = me ? localStorage.getItem(`canopy.lang.${me.username}`) : null;
  return chosen || me?.language || document.documentElement.lang || "en";
}

export function t(key, params = {}) {
  let text = state.words[key] ?? state.fallback[key] ?? key;
  for (const [k, v] of Object.entries(params)) text = text.replaceAll(`{${k}}`, v ?? "");
  return text;
}

// elements marked data-i18n (text), data-i18n-label (aria-label), data-i18n-placeholder get their words
export function applyWords(root) {
  for (const e of root.querySelectorAll("[data-i18n]")) e.textContent = t(e.dataset.i18n);
  for (const e of root.querySelectorAll("[data-i18n-label]")) e.setAttribute("aria-label", t(e.dataset.i18nLabel));
  for (const e of root.querySelectorAll("[data-i18n-placeholder]")) e.placeholder = t(e.dataset.i18nPlaceholder);
}

// ---- DOM -----------------------------------------------------------------------------------------------

// el("p", {class: "x", onclick: f}, "text", child) -- strings become text nodes, never HTML
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined && c !== false) node.append(c);
  return node;
}

// ---- banners: loud, red, saying what to do -----------------------------------------------------------

const shown = new Map(); // id -> {text, opts}: re-worded when the language changes

export const banners = {
  // text: a string, or a function giving it (then it follows a language switch)
  show(id, text, opts = {}) {
    shown.set(id, { text, opts });
    const box = document.getElementById("banners");
    const words = typeof text === "function" ? text() : text;
    const body = [el("p", { class: "banner-text" }, words)];
    if (opts.action) {
      const label = typeof opts.action === "function" ? opts.action() : opts.action;
      body.push(el("button", { type: "button", class: "banner-action", onclick: opts.onAction }, label));
    }
    let b = document.getElementById(`banner-${id}`);
    if (!b) {
      b = el("div", { id: `banner-${id}`, role: "alert" });
      box.append(b);
    }
    b.className = `banner ${opts.kind || "danger"}`;
    b.replaceChildren(...body);
  },
  hide(id) {
    shown.delete(id);
    document.getElementById(`banner-${id}`)?.remove();
  },
  has(id) { return shown.has(id); },
  reword() { for (const [id, { text, opts }] of shown) this.show(id, text, opts); },
};

// ---- times ---------------------------------------------------------------------------------------------

export function now() { return Date.now() / 1000 + state.clockOffset; }

export function serverTime(ts) { // a heartbeat's ts: the centre's clock, so countdowns agree with it
  if (typeof ts === "number") state.clockOffset = ts - Date.now() / 1000;
}

// date, time and zone: "6 Dec, 22:14 GMT+8" -- never a bare clock time
export function fmtTime(ts) {
  if (typeof ts !== "number") return "?";
  return new Intl.DateTimeFormat(state.lang, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit",
    hourCycle: "h23", timeZoneName: "short" }).format(new Date(ts * 1000));
}

export function fmtAgo(ts) {
  const s = Math.max(0, now() - ts);
  if (s < 60) return t("time.just_now");
  if (s < 3600) return t("time.min_ago", { n: Math.floor(s / 60) });
  if (s < 86400) return t("time.h_ago", { n: Math.floor(s / 3600) });
  return t("time.d_ago", { n: Math.floor(s / 86400) });
}

export function fmtCountdown(seconds) {
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = String(s % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${r}` : `${m}:${r}`;
}

export function fmtNumber(v, digits = 1) {
  return typeof v === "number" ? new Intl.NumberFormat(state.lang, { maximumFractionDigits: digits }).format(v) : "–";
}

// ---- the page frame: who is logged in, language, log out ---------------------------------------------

export async function loadMe() {
  state.me = await api("/api/me");
  return state.me;
}

export function toLogin() {
  location.assign(`/login?next=${encodeURIComponent(location.pathname)}`);
}

// fill <header id="top">: title, person, language switch, extra buttons, log out
export function header(titleKey, extra = []) {
  const other = state.lang === "en" ? "zh-CN" : "en";
  const top = document.getElementById("top");
  top.replaceChildren(
    el("h1", { class: "title" }, t(titleKey)),
    el("div", { class: "who" },
      el("span", { class: "person" }, t("header.logged_in_as", { name: state.me?.display_name || state.me?.username || "" })),
      el("button", { type: "button", class: "lang", lang: other, onclick: () => switchLanguage(other) },
        t(`lang.${other}`)),
      ...extra,
      el("button", { type: "button", class: "secondary", onclick: logout }, t("header.logout"))));
  document.title = t(titleKey);
}

async function switchLanguage(lang) {
  if (state.me) localStorage.setItem(`canopy.lang.${state.me.username}`, lang);
  await setLanguage(lang);
}

export async function logout() {
  try { await api("/api/logout", { method: "POST" }); } catch { /* the session may have ended already */ }
  location.assign("/login");
}

// a page's start: who am I (else to the login page) and my words -- fetched side by side (the page was
// served in the account's language, which is usually the one wanted)
export async function start() {
  catalogue("en");
  catalogue(LANGUAGES.includes(document.documentElement.lang) ? document.documentElement.lang : "en");
  try {
    await loadMe();
  } catch (e) {
    if (e.status === 401 || e.status === 403) return toLogin();
    throw e;
  }
  await setLanguage(preferredLanguage(state.me));
  return state.me;
}

export function can(permission) { return !!state.me?.permissions?.includes(permission); }

// a mark the benchmark and the tests read: performance.getEntriesByName(name)
export function mark(name) { performance.mark(name); }
