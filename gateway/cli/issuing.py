"""The issuer side's plumbing, shared by ``canopy remote …`` (commands.py, remote_config.py) and ``canopy ack``.

The issuer's private key (refused when others can read it), the broker named on the
command line, and one signed envelope published on its kind's topic (``…/cmd``,
``…/config``) with its results collected from ``…/cmd/result`` until a final one.
The broker is reached through the one asyncio MQTT client of ``core.mqtt``, with
the gateway's TLS policy.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import stat
from pathlib import Path

import orjson

FINAL = ("executed", "rejected", "failed")  # a command's final results


def issuer_options(*, timeout: float, valid_for: float, what: str) -> argparse.ArgumentParser:
    """The options every ``canopy remote …`` takes (a parent parser): gateway, key, broker, timeout, validity."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--site", required=True, help="the gateway's site id")
    common.add_argument("--gateway", required=True, help="the gateway id")
    common.add_argument("--key", required=True, help="issuer private key (from `canopy keys gen`), mode 0600")
    common.add_argument("--issuer", help="issuer name as in the gateway's config (default: the key file name without .key)")
    common.add_argument("--as", dest="on_behalf_of", metavar="PERSON",
                        help="the person this issuer signs for (a service acting for people); results and audit name them")
    common.add_argument("--broker", default=None, help="broker host:port (default 127.0.0.1:1883, or :8883 with --tls-ca)")
    common.add_argument("--tls-ca", help="CA bundle (PEM) that signed the broker's certificate; enables TLS")
    common.add_argument("--username", help="broker user name")
    common.add_argument("--password-file", help="file holding the broker password (mode 0600)")
    common.add_argument("--timeout", type=float, default=timeout, help=f"seconds to wait for the result (default {timeout:g})")
    common.add_argument("--valid-for", type=float, default=valid_for,
                        help=f"seconds the {what} stays valid; the gateway refuses it after that (default {valid_for:g})")
    common.add_argument("--json", action="store_true", help="print the result records as JSON lines")
    return common


def load_issuer_key(path: str):
    """The issuer's private key; refuses a file others can read."""
    from core.protocol import envelope

    st = os.stat(path)
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise PermissionError(f"key file {path} is readable by others (mode {stat.S_IMODE(st.st_mode):04o}); chmod 600 it")
    return envelope.load_private_key(Path(path).read_bytes())


def broker_address(args) -> tuple[str, int]:
    """``--broker host:port`` (or ``[v6]:port``), defaulting to loopback and the TLS port when ``--tls-ca`` is given."""
    text = args.broker or ("127.0.0.1:8883" if args.tls_ca else "127.0.0.1:1883")
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = text, "8883" if args.tls_ca else "1883"
    host = host.strip("[]")
    try:
        p = int(port)
        if not 1 <= p <= 65535:
            raise ValueError
    except ValueError:
        raise ValueError(f"--broker {text!r}: expected host:port") from None
    return host or "127.0.0.1", p


def endpoint_from_args(args):
    """``--broker``, ``--tls-ca``, ``--username``, ``--password-file`` -> (host, port, endpoint).

    Raises ValueError for flags that do not go together, OSError for a file it cannot read,
    ssl.SSLError for a CA file that is not a CA bundle.
    """
    if (args.password_file is None) != (args.username is None):
        raise ValueError("--username and --password-file go together")
    host, port = broker_address(args)
    password = None
    if args.password_file:
        from gateway.config.checks import read_secret

        password = read_secret(args.password_file, "password file")
    return host, port, remote_endpoint(host, port, args.tls_ca, args.username, password)


def send(env: dict, *, host: str, port: int, tls_ca: str | None = None, username: str | None = None,
         password: str | None = None, timeout: float = 30.0, on_record=None) -> list[dict]:
    """Publish a signed envelope and collect its results until a final one (or the timeout).

    Returns the result records in arrival order (deduplicated by status);
    raises ConnectionError if the broker cannot be reached or refuses us.
    """
    return asyncio.run(send_async(env, remote_endpoint(host, port, tls_ca, username, password),
                                  timeout=timeout, on_record=on_record))


def remote_endpoint(host: str, port: int, tls_ca: str | None = None, username: str | None = None,
                    password: str | None = None):
    """The broker as the command line names it, with the gateway's TLS policy when --tls-ca is given.

    Raises OSError (CA file) or ssl.SSLError (not a CA bundle).
    """
    from core.mqtt import BrokerEndpoint
    from gateway.config.broker import TlsConfig
    from gateway.uplink.broker_auth import tls_context

    tls = tls_context(TlsConfig(ca=tls_ca), str) if tls_ca else None
    return BrokerEndpoint(host, port, username if username else None, password, tls)


async def send_async(env: dict, endpoint, *, timeout: float = 30.0, on_record=None, final=FINAL) -> list[dict]:
    """``send`` on a running loop: subscribe ``…/cmd/result``, publish on the envelope kind's topic (``…/cmd``,
    ``…/config``; PUBACK awaited), collect until a ``final`` status."""
    from core.mqtt import MqttClient, MqttConnectError, MqttDisconnectedError
    from core.protocol.envelope import KINDS
    from core.protocol.topics import Topics
    from gateway.cli.broker import client_id

    topics = Topics(env["site"], env["gateway"])
    records: list[dict] = []
    client = MqttClient(endpoint, client_id=client_id("remote"), connect_timeout=min(timeout, 10.0))
    try:
        async with asyncio.timeout(timeout), client:
            await client.subscribe(topics.cmd_result)
            await client.publish(f"{topics.base}/{KINDS[env.get('kind', 'command')]}", orjson.dumps(env), qos=1)
            async for msg in client.messages():
                if _collect(msg.payload, env["id"], records, on_record, final):
                    break
    except TimeoutError:
        pass  # the records so far; the caller says what is missing
    except MqttConnectError as exc:
        if exc.refused:
            raise ConnectionError(f"the broker refused the connection: {exc.reason}") from None
        raise ConnectionError(f"cannot reach the broker at {endpoint}: {exc.reason}") from None
    except MqttDisconnectedError as exc:
        raise ConnectionError(f"lost the broker at {endpoint}: {exc}") from None
    return records


def _collect(payload: bytes, cmd_id: str, records: list[dict], on_record, final=FINAL) -> bool:
    """Add this command's new results from one message; True once a final one arrived."""
    from gateway.cli.broker import records_of

    for rec in records_of(payload):
        if rec.get("id") != cmd_id or rec.get("status") in {r.get("status") for r in records}:
            continue
        records.append(rec)
        if on_record is not None:
            on_record(rec)
        if rec.get("status") in final:
            return True
    return False
