// The installer/admin page: gateways and their health (offline ones on red, first, and in a banner),
// people and their roles (add with a one-time password shown once, disable, change roles), who is told
// through which channel, and the issuer keys with the YAML for a site's gateways.  Each part is shown only
// to a role that may use it; the API checks every request again.

import { api, banners, can, el, events, header, mark, start, t, toLogin } from "./core.js";
import { Live } from "./live.js";
import { gatewayCard, grantFields, keysView, readGrant, routingView, userCard } from "./admin_view.js";

const SECTIONS = [ // section id, the permission it needs, what it reads
  ["gateways", "gaps.view", "/api/admin/gateways"],
  ["people", "users.manage", "/api/admin/users"],
  ["routing", "routing.manage", "/api/admin/routing"],
  ["keys", "keys.manage", "/api/admin/keys"],
];
const a = { data: {}, shown: [], grantFor: null, me: null, rendered: false };
const enc = encodeURIComponent;

async function loadOne(id, path) {
  try {
    a.data[id] = await api(path);
    banners.hide(`load-${id}`);
  } catch (e) {
    if (e.status === 401) return;
    banners.show(`load-${id}`, () => t("admin.load_failed", { part: t(`admin.${id}`), detail: e.message }), { kind: "warning" });
  }
}

async function load(ids = a.shown) {
  await Promise.all(SECTIONS.filter(([id]) => ids.includes(id)).map(([id, , path]) => loadOne(id, path)));
  render();
  if (!a.rendered) { a.rendered = true; mark("admin-rendered"); }
}

function knownSites() {
  const sites = new Set((a.data.gateways || []).map((g) => g.site));
  for (const k of a.data.keys || []) sites.add(k.site);
  for (const u of a.data.people || []) for (const g of u.grants) if (g.site) sites.add(g.site);
  return [...sites].sort();
}

// ---- showing -------------------------------------------------------------------------------------------

function render() {
  const focus = document.activeElement?.dataset?.focus;
  renderNav();
  renderGateways();
  if (a.shown.includes("people")) {
    document.getElementById("admin-users").replaceChildren(...(a.data.people || []).map((u) => userCard(u, a.me.username, handlers)));
  }
  if (a.shown.includes("routing") && a.data.routing) {
    document.getElementById("admin-routing").replaceChildren(...routingView(a.data.routing));
  }
  if (a.shown.includes("keys")) {
    const keys = a.data.keys || [];
    document.getElementById("admin-keys").replaceChildren(...(keys.length ? keys.map(keysView)
      : [el("p", { class: "empty" }, t("admin.no_sites"))]));
  }
  if (focus) document.querySelector(`[data-focus="${CSS.escape(focus)}"]`)?.focus();
}

function renderNav() {
  document.getElementById("admin-nav-list").replaceChildren(...a.shown.map((id) =>
    el("li", {}, el("a", { href: `#${id}`, class: "big-link" }, t(`admin.${id}`)))));
}

function renderGateways() {
  if (!a.shown.includes("gateways")) return;
  const gws = a.data.gateways || [];
  const bad = gws.filter((g) => g.trouble);
  document.getElementById("admin-gateways").replaceChildren(...(gws.length ? gws.map(gatewayCard)
    : [el("li", { class: "empty" }, t("desk.no_gateways"))]));
  document.getElementById("gateways-summary").textContent = t("admin.gateways_summary", { n: gws.length, bad: bad.length });
  if (bad.length) {
    banners.show("sites", () => t("banner.sites_trouble", { n: bad.length, list: bad.map((g) => `${g.site}/${g.gateway}`).join(", ") }));
  } else banners.hide("sites");
}

// ---- acting on people ----------------------------------------------------------------------------------

function say(id, text, error = false) {
  const p = document.getElementById(id);
  p.textContent = text;
  p.classList.toggle("error", error);
}

function showPassword(username, password) {
  const box = document.getElementById("new-password");
  box.hidden = false;
  box.replaceChildren(
    el("p", {}, el("strong", {}, t("admin.otp_for", { user: username }))),
    el("p", { class: "admin-otp-value", id: "otp-value" }, password),
    el("p", {}, t("admin.otp_note")),
    el("button", { type: "button", class: "secondary", onclick: () => { box.hidden = true; box.replaceChildren(); } }, t("admin.otp_done")));
  box.scrollIntoView({ block: "nearest" });
}

async function change(path, body, done) {
  try {
    const r = await api(path, { method: body === undefined ? "POST" : "PUT", body });
    banners.hide("people");
    await loadOne("people", "/api/admin/users");
    render();
    done?.(r);
    return r;
  } catch (e) {
    banners.show("people", () => t("admin.change_refused", { detail: e.message }));
    return null;
  }
}

const handlers = {
  removeGrant(u, gr) {
    const rest = u.grants.filter((x) => x !== gr);
    return change(`/api/admin/users/${enc(u.username)}/grants`, { grants: rest });
  },
  addGrant(u) {
    a.grantFor = u;
    document.getElementById("grant-title").textContent = t("admin.add_role_for", { user: u.username });
    document.getElementById("grant-fields").replaceChildren(...grantFields("ng", knownSites()));
    say("grant-status", "");
    document.getElementById("grant-dialog").showModal();
  },
  async reset(u) {
    if (!confirm(t("admin.confirm_reset", { user: u.username }))) return;
    await change(`/api/admin/users/${enc(u.username)}/reset-password`, undefined, (r) => showPassword(u.username, r.one_time_password));
  },
  async setActive(u, active) {
    if (!active && !confirm(t("admin.confirm_disable", { user: u.username }))) return;
    await change(`/api/admin/users/${enc(u.username)}/${active ? "enable" : "disable"}`);
  },
};

async function addUser(e) {
  e.preventDefault();
  const f = e.target;
  const body = { username: f.username.value.trim(), display_name: f.display_name.value.trim() || null, language: f.language.value,
    phone: f.phone.value.trim() || null, email: f.email.value.trim() || null, grants: [readGrant("nu")] };
  if (!body.username) return say("add-user-status", t("admin.username_missing"), true);
  say("add-user-status", t("admin.adding"));
  try {
    const r = await api("/api/admin/users", { method: "POST", body });
    say("add-user-status", t("admin.added", { user: r.user.username }));
    f.reset();
    document.getElementById("nu-scope").disabled = true;
    showPassword(r.user.username, r.one_time_password);
    await loadOne("people", "/api/admin/users");
    render();
  } catch (err) {
    say("add-user-status", t("admin.add_refused", { detail: err.message }), true);
  }
}

async function grantSubmit(e) {
  const dialog = document.getElementById("grant-dialog");
  if (e.submitter?.value === "cancel") return;
  e.preventDefault();
  const u = a.grantFor;
  try {
    await api(`/api/admin/users/${enc(u.username)}/grants`, { method: "PUT", body: { grants: [...u.grants, readGrant("ng")] } });
    dialog.close();
    await loadOne("people", "/api/admin/users");
    render();
  } catch (err) {
    say("grant-status", t("admin.change_refused", { detail: err.message }), true);
  }
}

// ---- start ---------------------------------------------------------------------------------------------

function frame() {
  header("admin.title");
  for (const [id] of SECTIONS) document.getElementById(id).hidden = !a.shown.includes(id);
  document.getElementById("nu-grant").replaceChildren(...grantFields("nu", knownSites()));
  render();
}

async function main() {
  const me = await start();
  if (!me) return;
  a.me = me;
  a.shown = SECTIONS.filter(([, perm]) => can(perm)).map(([id]) => id);
  events.addEventListener("language", frame);
  events.addEventListener("session-ended", () => banners.show("session", () => t("banner.session_ended_phone"),
    { action: () => t("action.login"), onAction: toLogin }));
  document.getElementById("add-user").addEventListener("submit", addUser);
  document.getElementById("grant-form").addEventListener("submit", grantSubmit);
  frame();
  if (!a.shown.length) banners.show("nothing", () => t("admin.nothing"), { kind: "warning" });
  await load();
  if (a.shown.includes("gateways")) {
    new Live(["gateway"], { onSync: () => load(["gateways"]), onEvent: () => load(["gateways"]),
      onSessionEnded: () => events.dispatchEvent(new CustomEvent("session-ended")) }).start();
    setInterval(() => load(["gateways"]), 15000);
  }
}

main();
