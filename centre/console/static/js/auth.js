// The login form: used by the login page, and by the duty desk for a shift handover or after the
// session ended -- there it logs the next person in without reloading the page (alerts keep sounding).
// After a one-time password it asks for a new one before anything else.

import { api, el, state, t } from "./core.js";

// build the form into `box`; onDone(me) after a successful login (and password change)
export function loginForm(box, onDone, { idPrefix = "login" } = {}) {
  const status = el("p", { class: "form-status", role: "status", "aria-live": "polite" });
  const user = el("input", { id: `${idPrefix}-user`, name: "username", autocomplete: "username", required: true,
    maxlength: "128", autocapitalize: "none" });
  const pass = el("input", { id: `${idPrefix}-pass`, name: "password", type: "password", required: true,
    autocomplete: "current-password", maxlength: "1024" });
  const form = el("form", { class: "login-form", novalidate: true },
    el("label", { for: user.id }, t("login.username")), user,
    el("label", { for: pass.id }, t("login.password")), pass,
    el("button", { type: "submit", class: "primary big" }, t("login.submit")), status);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    status.textContent = t("login.working");
    status.className = "form-status";
    try {
      const me = await api("/api/login", { method: "POST", body: { username: user.value.trim(), password: pass.value } });
      state.me = me;
      if (me.must_change_password) return newPasswordForm(box, pass.value, onDone, idPrefix);
      onDone(me);
    } catch (err) {
      status.className = "form-status error";
      status.textContent = err.status === 401 ? t("login.wrong") : err.message;
    }
  });
  box.replaceChildren(form);
  user.focus();
}

function newPasswordForm(box, current, onDone, idPrefix) {
  const status = el("p", { class: "form-status", role: "status", "aria-live": "polite" });
  const one = el("input", { id: `${idPrefix}-new1`, type: "password", autocomplete: "new-password", required: true });
  const two = el("input", { id: `${idPrefix}-new2`, type: "password", autocomplete: "new-password", required: true });
  const form = el("form", { class: "login-form", novalidate: true },
    el("p", { class: "lead" }, t("login.must_change")),
    el("label", { for: one.id }, t("login.new_password")), one,
    el("label", { for: two.id }, t("login.new_password_again")), two,
    el("button", { type: "submit", class: "primary big" }, t("login.change")), status);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    status.className = "form-status error";
    if (one.value !== two.value) { status.textContent = t("login.mismatch"); return; }
    try {
      await api("/api/password", { method: "POST", body: { current, new: one.value } });
      onDone(await api("/api/me"));
    } catch (err) {
      status.textContent = err.message;
    }
  });
  box.replaceChildren(form);
  one.focus();
}
