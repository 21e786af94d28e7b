// The live stream (/api/stream, server-sent events) with a "connection lost -- reconnecting" banner.
//
// Every (re)connection starts with the centre's "hello": only then does the page re-read what it shows
// (onSync), so nothing committed between the read and the stream's start is missed.  Silence for more
// than two heartbeats counts as lost (a proxy can hold a dead connection open); the banner stays up until
// the next hello.  A 401 (the session ended) is reported once through onSessionEnded.

import { api, banners, events, serverTime, t } from "./core.js";

const BACKOFF_MAX_S = 15;

export class Live {
  constructor(channels, { onSync, onEvent, onSessionEnded }) {
    this.channels = channels;
    this.onSync = onSync;
    this.onEvent = onEvent;
    this.onSessionEnded = onSessionEnded;
    this.heartbeat = 15;
    this.last = Date.now();
    this.lost = false;
    this.failures = 0;
    this.es = null;
    this.stopped = false;
    this.watch = setInterval(() => this.check(), 2000);
  }

  start() {
    this.stopped = false;
    this.open();
  }

  stop() {
    this.stopped = true;
    this.es?.close();
    this.es = null;
    clearTimeout(this.retry);
  }

  open() {
    this.es?.close();
    const es = new EventSource(`/api/stream?channels=${this.channels.join(",")}`);
    this.es = es;
    this.last = Date.now();
    es.addEventListener("hello", (e) => {
      const hello = JSON.parse(e.data);
      this.heartbeat = hello.heartbeat || 15;
      this.last = Date.now();
      this.failures = 0;
      this.setLost(false);
      this.onSync("hello");
    });
    es.addEventListener("heartbeat", (e) => { this.last = Date.now(); serverTime(JSON.parse(e.data).ts); });
    es.addEventListener("resync", () => { this.last = Date.now(); this.onSync("resync"); });
    es.addEventListener("session_ended", () => { this.stop(); this.onSessionEnded(); });
    for (const ch of this.channels) {
      es.addEventListener(ch, (e) => { this.last = Date.now(); this.onEvent(ch, JSON.parse(e.data)); });
    }
    es.onerror = () => {
      this.setLost(true);
      if (es.readyState === EventSource.CLOSED) this.reconnectLater(); // refused (401, 429, 5xx): we retry ourselves
    };
  }

  async reconnectLater() {
    if (this.stopped) return;
    this.failures += 1;
    try {
      await api("/api/me");
    } catch (e) {
      if (e.status === 401) { this.stop(); this.onSessionEnded(); return; }
    }
    const wait = Math.min(BACKOFF_MAX_S, 2 ** Math.min(this.failures, 4)) * 1000;
    clearTimeout(this.retry);
    this.retry = setTimeout(() => this.open(), wait);
  }

  check() {
    if (this.stopped || !this.es) return;
    if (Date.now() - this.last > this.heartbeat * 2000 + 3000) { // two heartbeats missed: the link is dead
      this.setLost(true);
      this.es.close();
      this.reconnectLater();
      this.last = Date.now();
    }
  }

  setLost(lost) {
    if (lost === this.lost) return;
    this.lost = lost;
    if (lost) banners.show("connection", () => t("banner.connection_lost"));
    else banners.hide("connection");
    events.dispatchEvent(new CustomEvent("connection", { detail: { lost } }));
  }
}
