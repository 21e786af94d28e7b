"""The console: the pages people work in, served by the centre -- duty desk, volunteer phone, farmer phone.

Plain HTML, CSS and JavaScript modules under ``static/`` (no build step, no CDN: every byte
comes from the centre, because a site has no outside network), talking to the centre's JSON
API and its live stream (``/api/stream``).  Words live in one catalogue per language
(``static/i18n/en.json``, ``static/i18n/zh-CN.json``).  :mod:`centre.console.routes` serves
the pages and checks who may open which (:mod:`centre.console.pages`).  docs/console.md.
"""
