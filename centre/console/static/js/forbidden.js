// The 403 page: only its log-out button needs a script (a POST with the CSRF token).

import { logout } from "./core.js";

document.getElementById("logout")?.addEventListener("click", logout);
