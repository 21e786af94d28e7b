// The person's language lives in their account (PATCH /api/me), so every page, on every device, starts in it
// (the centre writes the page in it, and /api/me says it).  The header's switch (core.js) changes the page;
// this keeps the choice: a click on it is sent to the centre, and the browser's own copy is then dropped so
// the account's language is the one that counts next time.

import { api, state } from "./core.js";

export async function keepLanguage(lang) {
  if (!state.me) return;
  try {
    if (state.me.language !== lang) {
      state.me.language = (await api("/api/me", { method: "PATCH", body: { language: lang } })).language;
    }
    localStorage.removeItem(`canopy.lang.${state.me.username}`);
  } catch { /* kept in this browser only (core.js), until the next switch reaches the centre */ }
}

// capture: the switch may rebuild the header (and detach this button) before a bubbling click reaches us
document.addEventListener("click", (e) => {
  const button = e.target instanceof Element ? e.target.closest(".top button.lang") : null;
  if (button?.lang) keepLanguage(button.lang);
}, true);
