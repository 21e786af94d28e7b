// The login page: the form, in the browser's language (switchable), then on to the person's page.

import { loginForm } from "./auth.js";
import { el, events, setLanguage, state, t } from "./core.js";

const PAGES = ["/desk", "/farm", "/volunteer", "/admin"]; // where ?next= may lead (never another site)

function next() {
  const wanted = new URLSearchParams(location.search).get("next");
  return PAGES.includes(wanted) ? wanted : "/";
}

function render() {
  const other = state.lang === "en" ? "zh-CN" : "en";
  document.getElementById("top").replaceChildren(
    el("h1", { class: "title" }, t("login.title")),
    el("div", { class: "who" },
      el("button", { type: "button", class: "lang", lang: other, onclick: () => choose(other) }, t(`lang.${other}`))));
  document.title = t("login.title");
  loginForm(document.getElementById("login-box"), () => location.assign(next()));
}

function choose(lang) {
  localStorage.setItem("canopy.lang", lang);
  setLanguage(lang);
}

events.addEventListener("language", render);
setLanguage(localStorage.getItem("canopy.lang") || document.documentElement.lang || "en");
