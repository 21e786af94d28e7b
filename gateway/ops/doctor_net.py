"""The doctor's checks of the way out and of what the board must hold: broker, TLS certificates, camera models."""

from __future__ import annotations

import asyncio
import datetime
from pathlib import Path

from gateway.ops.checklist import FAIL, OK, WARN, Check


def broker_reachable(cfg, timeout: float) -> list[Check]:
    """A real MQTT connect with the gateway's own TLS and login, as the daemon would make it."""
    if cfg.site.broker is None:
        return [Check("broker", WARN, "no broker: section, the daemon starts the embedded demo broker",
                      "add broker: (host, port, tls, username, password_file) for a real site")]
    try:
        reason = asyncio.run(_connect(cfg, timeout))
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # a check never raises: say what went wrong
        reason = f"{exc.__class__.__name__}: {exc}"
    b = cfg.site.broker
    where = f"{b.host}:{b.port}{' TLS' if b.tls else ''}"
    if not reason:
        return [Check("broker", OK, f"{where}: connected and logged in" + (f" as {b.username}" if b.username else ""))]
    return [Check("broker", FAIL, f"{where}: {reason}",
                  "check the host and port from this board (4G APN, firewall), the CA and client certificate, and the "
                  "user name and password file with the broker's administrator")]


async def _connect(cfg, timeout: float) -> str:
    from gateway.uplink.broker_auth import broker_endpoint
    from core.mqtt import MqttClient, MqttConnectError

    try:
        endpoint = broker_endpoint(cfg.site.broker, cfg.resolve)
    except OSError as exc:  # PermissionError (password file mode), ssl.SSLError (CA, client cert)
        return f"cannot prepare the connection: {exc}"
    client = MqttClient(endpoint, client_id=f"canopy-doctor-{cfg.site.gateway}", connect_timeout=timeout)
    try:
        await client.connect()
    except MqttConnectError as exc:
        if exc.timed_out:
            return f"no answer within {timeout:g} s"
        return f"refused: {exc.reason}" if exc.refused else f"cannot connect: {exc.reason}"
    await client.disconnect()
    return ""


def certificates(cfg, warn_days: int) -> list[Check]:
    """Every certificate the broker section names: valid now, and how many days are left."""
    from gateway.ops.pki import cert_info

    tls = cfg.site.broker.tls if cfg.site.broker else None
    out = []
    for key in ("ca", "cert"):
        name = getattr(tls, key, None) if tls else None
        if not name:
            continue
        path = Path(cfg.resolve(name))
        try:
            infos = cert_info(path)
        except (OSError, ValueError) as exc:
            out.append(Check(f"tls {key}", FAIL, f"{path}: not a PEM certificate ({exc})", "put the PEM file the CA gave you there"))
            continue
        now = datetime.datetime.now(datetime.timezone.utc)
        invalid = [i for i in infos if not i.not_before <= now <= i.not_after]
        soonest = min(infos, key=lambda i: i.not_after)
        days = soonest.days_left(now)
        detail = f"{path.name}: {soonest.subject}, {days:.0f} days left (until {soonest.not_after:%Y-%m-%d})"
        if invalid:
            bad = invalid[0]
            out.append(Check(f"tls {key}", FAIL, f"{path.name}: {bad.subject} is not valid now "
                             f"({bad.not_before:%Y-%m-%d} to {bad.not_after:%Y-%m-%d})",
                             "renew it (send client.csr again) and check the clock"))
        elif days < warn_days:
            out.append(Check(f"tls {key}", WARN, detail, f"renew it within {days:.0f} days: the gateway is cut off when it expires"))
        else:
            out.append(Check(f"tls {key}", OK, detail))
    return out


def models(cfg) -> list[Check]:
    """Each camera detector's model is present and matches its pinned sha256."""
    if not cfg.site.cameras:
        return []
    from inference.artifacts import POSE_DETECTION, sha256_of

    out = []
    for cam in cfg.site.cameras:
        for det in cam.detectors:
            model = getattr(det, "model", None)
            path = Path(cfg.resolve(model)) if model else POSE_DETECTION.path
            pin = getattr(det, "model_sha256", None) or (None if model else POSE_DETECTION.sha256)
            name = f"model {cam.id}/{det.id}"
            if not path.is_file():
                out.append(Check(name, FAIL, f"{path} not found", "python scripts/fetch_models.py (CANOPY_ARTIFACTS on persistent storage)"))
            elif pin and sha256_of(path) != pin.lower():
                out.append(Check(name, FAIL, f"{path} does not match its pinned sha256", "python scripts/fetch_models.py --force"))
            else:
                out.append(Check(name, OK if pin else WARN, f"{path.name} " + ("verified" if pin else "present, no sha256 pinned"),
                                 "" if pin else "add model_sha256 to the detector"))
    return out
