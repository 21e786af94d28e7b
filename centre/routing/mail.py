"""The e-mail channel: one message per person, through SMTP (the standard library's smtplib, in a thread).

smtplib blocks, so every send runs in a worker thread (``asyncio.to_thread``), one at a
time per channel; the event loop never waits on a mail server.  SMTP 4xx answers and
network errors are retried with backoff; 5xx (a refused address, a refused sender) are
permanent failures.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from email.message import EmailMessage

from centre.routing.channels import Permanent, Retry, read_secret
from centre.routing.config import Email


def message(payload: dict, sender: str, to: str) -> EmailMessage:
    """The e-mail for one notification.  Pure."""
    severity = (payload.get("severity") or "").upper()
    what = payload.get("class") or "alert"
    where = f"{payload['site']}/{payload['gateway']}"
    msg = EmailMessage()
    msg["From"], msg["To"] = sender, to
    msg["Subject"] = f"[Canopy] {severity + ' ' if severity else ''}{what} {payload['type'].removeprefix('alert.')} " \
                     f"at {where}: {payload.get('subject') or payload['alert']}"
    lines = [payload.get("message") or "", "",
             f"Alert {payload['alert']} at {where}, {payload['type']}" + (f" by {payload['actor']}" if payload.get("actor") else ""),
             f"Group: {payload.get('group')}"]
    if payload.get("location"):
        lines.append("Where: " + ", ".join(f"{k} {v}" for k, v in payload["location"].items() if v))
    msg.set_content("\n".join(lines).strip() + "\n")
    return msg


class MailChannel:
    def __init__(self, cfg: Email):
        self.cfg = cfg
        self.password = read_secret(cfg.password_file, "e-mail password") if cfg.password_file else None
        self.max_attempts, self.backoff_initial, self.backoff_max = cfg.max_attempts, cfg.backoff_initial, cfg.backoff_max

    async def send(self, row) -> None:
        await asyncio.to_thread(self._send, message(row.payload, self.cfg.from_address, row.recipient))

    def _send(self, msg: EmailMessage) -> None:
        c = self.cfg
        try:
            smtp_cls = smtplib.SMTP_SSL if c.security == "tls" else smtplib.SMTP
            kwargs = {"context": ssl.create_default_context()} if c.security == "tls" else {}
            with smtp_cls(c.host, c.port, timeout=c.timeout, **kwargs) as smtp:
                if c.security == "starttls":
                    smtp.starttls(context=ssl.create_default_context())
                if c.username:
                    smtp.login(c.username, self.password)
                smtp.send_message(msg)
        except smtplib.SMTPRecipientsRefused as exc:
            raise Permanent(f"recipient refused: {exc.recipients}") from None
        except smtplib.SMTPResponseException as exc:
            text = f"SMTP {exc.smtp_code}: {exc.smtp_error[:200]!r}"
            raise (Permanent(text) if 500 <= exc.smtp_code < 600 else Retry(text)) from None
        except (smtplib.SMTPException, OSError) as exc:
            raise Retry(f"{type(exc).__name__}: {exc}") from None

    async def close(self) -> None:
        return None
