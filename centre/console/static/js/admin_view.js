// The installer/admin page's pieces of screen: a gateway with its health, a person with their roles, the
// fields of a role grant, the routing table, a site's issuer keys.  Pure builders: they return elements;
// admin.js decides when to build them and what the buttons do.

import { el, fmtAgo, fmtNumber, fmtTime, t } from "./core.js";

export const ROLES = ["duty_desk", "volunteer", "grid_leader", "farmer", "installer", "admin"];
const SCOPES = ["site", "group", "household", "zone"];
let ids = 0;

function known(key, params) {
  const s = t(key, params);
  return s === key ? null : s;
}

function fact(term, ...value) {
  return [el("dt", {}, term), el("dd", {}, ...value)];
}

// ---- gateways --------------------------------------------------------------------------------------------

export function gatewayState(g) {
  const reason = g.reason ? known(`gwreason.${g.reason}`) || g.reason : null;
  switch (g.trouble) {
    case "offline": return t("gateway.offline", { since: fmtTime(g.status_since), reason: reason ? ` (${reason})` : "" });
    case "silent": return t("gateway.silent", { ago: fmtAgo(g.last_seen) });
    case "unknown": return t("gateway.unknown");
    default: return t("gateway.online", { ago: fmtAgo(g.last_seen) });
  }
}

function outboxWords(g) {
  const h = g.health;
  if (!h) return g.state_ts ? t("admin.no_health", { time: fmtTime(g.state_ts) }) : t("admin.unknown_offline");
  const lanes = Object.entries(h.lanes).map(([lane, n]) => `${t(`admin.lane_${lane}`)} ${fmtNumber(n, 0)}`).join(" · ");
  const text = h.backlog ? t("admin.backlog", { n: fmtNumber(h.backlog, 0), lanes }) : t("admin.backlog_none");
  return h.lost ? `${text} ${t("admin.lost_at_gateway", { n: fmtNumber(h.lost, 0) })}` : text;
}

function deviceParts(h) {
  if (!h) return [t("admin.unknown_offline")];
  if (!h.devices) return [t("admin.no_devices")];
  const head = t("admin.devices_ok", { ok: h.devices_ok, n: h.devices });
  if (!h.failing.length) return [head];
  return [head, el("ul", { class: "admin-failing" }, h.failing.map((d) =>
    el("li", {}, el("strong", {}, d.device), ": ", known(`admin.device_${d.status}`) || d.status,
      d.detail ? ` (${d.detail})` : "", d.last_ok ? ` · ${t("admin.last_ok", { time: fmtTime(d.last_ok) })}` : "")))];
}

function gapWords(gaps) {
  const parts = [];
  if (gaps.open) parts.push(t("admin.gaps_open", { n: fmtNumber(gaps.missing, 0) }));
  if (gaps.unrepairable) parts.push(t("admin.gaps_lost", { n: fmtNumber(gaps.lost, 0) }));
  return parts.length ? parts.join(" · ") : t("admin.gaps_none");
}

function software(g) {
  const parts = [g.version ? t("admin.version", { v: g.version }) : t("admin.version_unknown")];
  if (g.protocol) parts.push(t("admin.protocol", { v: g.protocol }));
  if (g.boot) parts.push(t("admin.boot", { n: g.boot }));
  return parts.join(" · ");
}

export function gatewayCard(g) {
  const id = `gw-${++ids}`, h = g.health;
  const errors = [h?.degraded ? t("admin.store_degraded") : null, h?.store_error, h?.uplink_error].filter(Boolean);
  const warn = !g.trouble && (h?.failing?.length || h?.degraded || g.gaps.unrepairable);
  return el("li", { class: `admin-gw gw ${g.trouble ? "trouble" : warn ? "admin-warn" : "ok"}`, "data-gw": `${g.site}/${g.gateway}`,
    "aria-labelledby": id },
  el("h3", { class: "gw-name", id }, g.gateway, el("span", { class: "admin-site" }, ` · ${t("admin.site", { site: g.site })}`)),
  el("p", { class: "gw-state" }, gatewayState(g)),
  el("dl", { class: "admin-facts" },
    ...fact(t("admin.last_seen"), `${fmtTime(g.last_seen)} (${fmtAgo(g.last_seen)})`),
    ...fact(t("admin.software"), software(g)),
    ...fact(t("admin.outbox"), outboxWords(g)),
    ...fact(t("admin.devices"), ...deviceParts(h)),
    ...fact(t("admin.gaps"), gapWords(g.gaps)),
    ...(errors.length ? fact(t("admin.errors"), errors.join(" · ")) : [])));
}

// ---- people ---------------------------------------------------------------------------------------------

export function grantWords(gr) {
  const where = gr.site ? t("admin.at_site", { site: gr.site }) : t("admin.every_site");
  const scope = gr.scope_kind !== "site" ? ` · ${t(`admin.scope_${gr.scope_kind}`)} ${gr.scope}` : "";
  return `${t(`role.${gr.role}`)} · ${where}${scope}`;
}

// the user's card; on: {removeGrant(user, grant), addGrant(user), reset(user), setActive(user, active)}
export function userCard(u, me, on) {
  const id = `user-${++ids}`, self = u.username === me;
  const flags = [!u.active ? el("span", { class: "badge admin-off" }, t("admin.disabled")) : null,
    u.must_change_password ? el("span", { class: "badge admin-must" }, t("admin.must_change")) : null,
    self ? el("span", { class: "badge admin-plain" }, t("admin.you")) : null];
  const name = u.display_name && u.display_name !== u.username ? `${u.display_name} (${u.username})` : u.username;
  return el("li", { class: `admin-user${u.active ? "" : " admin-disabled"}`, "data-user": u.username, "aria-labelledby": id },
    el("h3", { id }, name, " ", ...flags),
    u.phone || u.email ? el("p", { class: "admin-contact" }, [u.phone, u.email].filter(Boolean).join(" · ")) : null,
    el("ul", { class: "admin-grants" }, u.grants.length ? u.grants.map((gr) => el("li", {}, el("span", {}, grantWords(gr)),
      self ? null : el("button", { type: "button", class: "secondary admin-small", "data-focus": `rm-${u.username}-${grantWords(gr)}`,
        "aria-label": t("admin.remove_role_label", { role: grantWords(gr), user: u.username }),
        onclick: () => on.removeGrant(u, gr) }, t("admin.remove"))))
      : el("li", { class: "empty" }, t("admin.no_roles"))),
    self ? el("p", { class: "admin-self" }, t("admin.self_note")) : el("div", { class: "actions" },
      el("button", { type: "button", class: "secondary", "data-focus": `add-${u.username}`, onclick: () => on.addGrant(u) }, t("admin.add_role")),
      el("button", { type: "button", class: "secondary", "data-focus": `reset-${u.username}`, onclick: () => on.reset(u) }, t("admin.reset_password")),
      el("button", { type: "button", class: u.active ? "danger" : "primary", "data-focus": `active-${u.username}`,
        onclick: () => on.setActive(u, !u.active) }, t(u.active ? "admin.disable" : "admin.enable"))));
}

// role, site, scope fields (ids prefixed); sites: the sites the page knows, offered as suggestions
export function grantFields(prefix, sites) {
  const scopeInput = el("input", { id: `${prefix}-scope`, name: "scope", autocomplete: "off", maxlength: "64", disabled: true });
  const kind = el("select", { id: `${prefix}-kind`, name: "scope_kind",
    onchange: (e) => { scopeInput.disabled = e.target.value === "site"; if (scopeInput.disabled) scopeInput.value = ""; } },
  SCOPES.map((s) => el("option", { value: s }, t(`admin.scope_${s}_choice`))));
  const list = `${prefix}-sites`;
  return [
    el("div", {}, el("label", { for: `${prefix}-role` }, t("admin.role")),
      el("select", { id: `${prefix}-role`, name: "role" }, ROLES.map((r) => el("option", { value: r }, t(`role.${r}`))))),
    el("div", {}, el("label", { for: `${prefix}-site` }, t("admin.site_field")),
      el("input", { id: `${prefix}-site`, name: "site", list, autocomplete: "off", maxlength: "64",
        placeholder: t("admin.site_placeholder") }),
      el("datalist", { id: list }, sites.map((s) => el("option", { value: s })))),
    el("div", {}, el("label", { for: `${prefix}-kind` }, t("admin.scope_kind")), kind),
    el("div", {}, el("label", { for: `${prefix}-scope` }, t("admin.scope")), scopeInput),
  ];
}

export function readGrant(prefix) {
  const v = (name) => document.getElementById(`${prefix}-${name}`).value.trim();
  const kind = v("kind");
  return { role: v("role"), site: v("site") || null, scope_kind: kind, scope: kind === "site" ? null : v("scope") || null };
}

// ---- routing --------------------------------------------------------------------------------------------

export function routingView(r) {
  const groups = el("ul", { class: "admin-list" }, r.groups.map((g) => el("li", { class: "admin-route" },
    el("h3", {}, g.group === "*" ? t("admin.any_group") : g.group),
    el("dl", { class: "admin-facts" },
      ...fact(t("admin.channels"), g.channels.map((c) => known(`admin.channel_${c.split(":")[0]}`, { name: c.split(":")[1] || "" }) || c).join(" · ")),
      ...fact(t("admin.members"), [...g.users, ...g.granted.filter((x) => !g.users.includes(x))].join(", ") || t("admin.nobody"))))));
  const webhooks = r.webhooks.map((w) => `${w.name}: ${w.url}`);
  const facts = el("dl", { class: "admin-facts" },
    ...fact(t("admin.webhooks"), webhooks.length ? webhooks.join(" · ") : t("admin.none")),
    ...fact(t("admin.mail_server"), r.email ? `${r.email.host}:${r.email.port} (${r.email.from_address})` : t("admin.none")),
    ...fact(t("admin.blind"), t("admin.blind_words", { min: fmtNumber(r.blind.after / 60), groups: r.blind.groups.join(", ") })),
    ...fact(t("admin.notify_on"), r.notify_on.map((e) => known(`admin.event_${e}`) || e).join(" · ")));
  return [groups, facts];
}

// ---- keys -----------------------------------------------------------------------------------------------

export function keysView(site) {
  const id = `keys-${++ids}`;
  return el("section", { class: "admin-keys", "aria-labelledby": id, "data-site": site.site },
    el("h3", { id }, t("admin.site", { site: site.site })),
    site.keys.length ? el("ul", { class: "admin-list" }, site.keys.map((k) => el("li", { class: "admin-key" },
      el("strong", {}, k.issuer), " ", k.active ? el("span", { class: "badge admin-active" }, t("admin.signs_now"))
        : el("span", { class: "badge admin-plain" }, t(k.has_private ? "admin.next_key" : "admin.retired_key")),
      el("code", { class: "admin-pub" }, k.public_key))))
      : el("p", { class: "empty" }, t("admin.no_keys")),
    site.snippet ? el("pre", { class: "admin-snippet", tabindex: "0", "aria-label": t("admin.snippet_label", { site: site.site }) },
      el("code", {}, site.snippet))
      : el("pre", { class: "admin-snippet", tabindex: "0", "aria-label": t("admin.command_label") }, el("code", {}, site.command)));
}
