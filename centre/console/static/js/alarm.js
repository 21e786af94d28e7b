// The duty desk's alarm: sound and a browser notification for every critical alert, repeating until
// it is acknowledged -- and a loud red banner for every reason it cannot (sound blocked, notifications
// denied, an insecure origin, the shift not started).
//
// Browsers play sound only after a user gesture and show notifications only in a secure context,
// so the shift starts with an explicit click ("Start shift -- sound on").  The sound is made with
// WebAudio (nothing to download); the notification carries the alert's words and place.

import { banners, t } from "./core.js";

export const REPEAT_S = 5; // the sound repeats this often while a critical alert waits for an acknowledgement
const RENOTIFY_S = 60; // and the notification is shown again this often

export class Alarm {
  constructor({ onClickNotification, onChange }) {
    this.ctx = null;
    this.started = false;
    this.soundOk = false;
    this.notifyOk = false;
    this.waiting = []; // [{key, title, body}] critical alerts not acknowledged
    this.notifiedAt = new Map(); // key -> ms of the last notification
    this.lastSound = 0;
    this.onClickNotification = onClickNotification;
    this.onChange = onChange || (() => {});
    this.timer = setInterval(() => this.tick(), 1000);
  }

  // the click of "Start shift": both permissions are asked inside the gesture
  async startShift() {
    await Promise.all([this.enableSound(), this.enableNotifications()]);
    this.started = true;
    this.startedAt = this.startedAt || Date.now() / 1000;
    banners.hide("shift");
    this.onChange();
    if (this.soundOk) this.beep(1);
    this.tick(true);
  }

  async enableSound() {
    try {
      this.ctx = this.ctx || new AudioContext();
      await Promise.race([this.ctx.resume(), new Promise((r) => setTimeout(r, 1500))]);
    } catch { /* no audio device or API: reported below */ }
    if (this.ctx) this.ctx.onstatechange = () => this.soundState(); // the browser may suspend it later
    this.soundState();
  }

  soundState() {
    this.soundOk = !!this.ctx && this.ctx.state === "running";
    if (this.soundOk) banners.hide("sound");
    else banners.show("sound", () => t("banner.sound_blocked"),
      { action: () => t("shift.retry"), onAction: () => this.startShift() });
    this.onChange();
  }

  async enableNotifications() {
    this.notifyOk = false;
    if (!window.isSecureContext) {
      const secure = `https://${location.host}${location.pathname}`;
      const local = `http://localhost${location.port ? ":" + location.port : ""}${location.pathname}`;
      banners.show("notify", () => t("banner.insecure", { secure, local }));
      return;
    }
    if (!("Notification" in window)) {
      banners.show("notify", () => t("banner.no_notifications"));
      return;
    }
    let permission = Notification.permission;
    if (permission === "default") {
      try { permission = await Notification.requestPermission(); } catch { permission = "denied"; }
    }
    this.notifyOk = permission === "granted";
    if (this.notifyOk) banners.hide("notify");
    else banners.show("notify", () => t("banner.notifications_denied"),
      { action: () => t("shift.retry"), onAction: () => this.startShift() });
  }

  // the critical alerts that wait for an acknowledgement, as [{key, title, body}]
  update(waiting) {
    this.waiting = waiting;
    const keys = new Set(waiting.map((w) => w.key));
    for (const k of [...this.notifiedAt.keys()]) if (!keys.has(k)) this.notifiedAt.delete(k);
    if (waiting.length && !this.started) {
      banners.show("shift", () => t("banner.shift_not_started", { n: this.waiting.length }),
        { action: () => t("shift.start"), onAction: () => this.startShift() });
    } else if (!waiting.length) {
      banners.hide("shift");
    }
    this.tick(true);
  }

  tick(fresh = false) {
    if (!this.started || !this.waiting.length) return;
    const nowMs = Date.now();
    for (const w of this.waiting) {
      const last = this.notifiedAt.get(w.key);
      if (last === undefined || nowMs - last >= RENOTIFY_S * 1000) {
        this.notify(w, last !== undefined);
        this.notifiedAt.set(w.key, nowMs);
      }
    }
    if (nowMs - this.lastSound >= REPEAT_S * 1000 || (fresh && nowMs - this.lastSound > 1000)) this.beep(3);
  }

  notify(w, again) {
    if (!this.notifyOk) return;
    try {
      const n = new Notification(w.title, { body: w.body, tag: w.key, renotify: again, requireInteraction: true });
      n.onclick = () => { window.focus(); this.onClickNotification(w.key); n.close(); };
    } catch {
      banners.show("notify", () => t("banner.notification_failed"));
    }
  }

  // two-tone beeps: loud enough to wake, short enough to talk over
  beep(times) {
    this.lastSound = Date.now();
    if (!this.ctx || this.ctx.state !== "running") return;
    const start = this.ctx.currentTime + 0.02;
    for (let i = 0; i < times * 2; i++) {
      const osc = this.ctx.createOscillator();
      const gain = this.ctx.createGain();
      osc.type = "square";
      osc.frequency.value = i % 2 ? 660 : 880;
      gain.gain.value = 0.2;
      osc.connect(gain).connect(this.ctx.destination);
      osc.start(start + i * 0.22);
      osc.stop(start + i * 0.22 + 0.18);
    }
  }
}
