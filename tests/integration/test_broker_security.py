"""TLS (a CA made here) and username/password against a real mosquitto."""

from __future__ import annotations

import os
import time

from tests.support import Mosquitto, make_password_file, make_tls, site_config, wait_until


def _secret(tmp_path, text: str) -> str:
    path = tmp_path / "gateway.password"
    path.write_text(text + "\n")
    os.chmod(path, 0o600)
    return str(path)


def test_tls_and_password_deliver(tmp_path, farm_sim, subscriber_factory, gateway_factory):
    tls = make_tls(tmp_path)
    passwd = make_password_file(tmp_path, "gw-1", "s3cret-pass")
    broker = Mosquitto(tmp_path, tls=tls, password_file=passwd).start()
    try:
        sub = subscriber_factory(broker.port, tls_ca=tls["ca"], username="gw-1", password="s3cret-pass")
        cfg = site_config(tmp_path, sim_port=farm_sim.port, broker={
            "host": "127.0.0.1", "port": broker.port, "tls": {"ca": tls["ca"]},
            "username": "gw-1", "password_file": _secret(tmp_path, "s3cret-pass")})
        gw = gateway_factory(cfg)
        wait_until(lambda: len(sub.seqs("telemetry")) > 20, 20, what="telemetry over TLS with a password")
        assert "(TLS)" in gw.output()
        rc, _ = gw.terminate()
        assert rc == 0
    finally:
        broker.stop()


def test_wrong_password_is_a_clear_log_line_and_retries(tmp_path, farm_sim, gateway_factory):
    passwd = make_password_file(tmp_path, "gw-1", "right-password")
    broker = Mosquitto(tmp_path, password_file=passwd).start()
    try:
        cfg = site_config(tmp_path, sim_port=farm_sim.port, broker={
            "host": "127.0.0.1", "port": broker.port, "username": "gw-1", "password": "${CANOPY_TEST_PW}"})
        gw = gateway_factory(cfg, log_level="debug", env={"CANOPY_TEST_PW": "wrong-password"})
        wait_until(lambda: "failure 3" in gw.output(), 20, what="three refused attempts")
        out = gw.output()
        assert "broker refused the connection" in out and "check broker.username and the password" in out
        assert "Traceback" not in out
        assert gw.alive(), "a wrong password must not crash the gateway"
        # polling and storing go on meanwhile: nothing is lost while the login is refused
        rc, _ = gw.terminate()
        assert rc == 0
    finally:
        broker.stop()


def test_untrusted_certificate_is_refused_clearly(tmp_path, farm_sim, gateway_factory):
    tls = make_tls(tmp_path)
    other = make_tls(tmp_path / "other") if (tmp_path / "other").mkdir() is None else None
    broker = Mosquitto(tmp_path, tls=tls).start()
    try:
        cfg = site_config(tmp_path, sim_port=farm_sim.port, broker={
            "host": "127.0.0.1", "port": broker.port, "tls": {"ca": other["ca"]}})
        gw = gateway_factory(cfg)
        wait_until(lambda: "TLS certificate rejected" in gw.output(), 15, what="certificate rejection in the log")
        time.sleep(0.5)
        assert gw.alive()
        gw.terminate()
    finally:
        broker.stop()


def _cli(*argv: str) -> int:
    import argparse

    from gateway.cli.alerts import add_parsers as alert_parsers
    from gateway.cli.commands import add_parsers as command_parsers

    parser = argparse.ArgumentParser(prog="canopy")
    sub = parser.add_subparsers(dest="command", required=True)
    alert_parsers(sub)
    command_parsers(sub)
    args = parser.parse_args(list(argv))
    return args.func(args)


def test_operator_commands_use_the_gateways_tls_and_password_policy(tmp_path, capsys):
    """`canopy ack`, `canopy alerts --broker` and `canopy remote` reach a TLS + password broker through the one
    asyncio client, and say clearly when the login or the certificate is refused."""
    tls = make_tls(tmp_path)
    broker = Mosquitto(tmp_path, tls=tls, password_file=make_password_file(tmp_path, "gw-1", "s3cret-pass")).start()
    try:
        def site(password: str, ca: str):
            return str(site_config(tmp_path, sim_port=5020, broker={
                "host": "127.0.0.1", "port": broker.port, "tls": {"ca": ca}, "username": "gw-1",
                "password_file": _secret(tmp_path, password)}))

        cfg = site("s3cret-pass", tls["ca"])
        key = tmp_path / "farmer.key"
        assert _cli("keys", "gen", "--out", str(key)) == 0
        assert _cli("ack", "1-abcd", "--key", str(key), "--by", "wang", "-c", cfg, "--no-wait") == 0  # PUBACK over TLS with the password
        assert "ack for 1-abcd sent" in capsys.readouterr().out
        assert _cli("ack", "1-abcd", "--key", str(key), "--by", "wang", "-c", site("wrong", tls["ca"]), "--no-wait") == 1
        assert "refused the connection" in (err := capsys.readouterr().err) and "check broker.username" in err
        other = make_tls(tmp_path / "other") if (tmp_path / "other").mkdir() is None else None
        assert _cli("alerts", "-c", site("s3cret-pass", other["ca"]), "--broker", "--timeout", "2") == 1
        assert "TLS certificate rejected" in capsys.readouterr().err

        remote = ["remote", "close-all", "--site", "test-site", "--gateway", "gw-1", "--key", str(key),
                  "--broker", f"127.0.0.1:{broker.port}", "--tls-ca", tls["ca"], "--username", "gw-1", "--timeout", "2"]
        assert _cli(*remote, "--password-file", _secret(tmp_path, "s3cret-pass")) == 3  # reached; no gateway answers
        assert "no result from test-site/gw-1" in capsys.readouterr().err
        assert _cli(*remote, "--password-file", _secret(tmp_path, "wrong")) == 3
        assert "the broker refused the connection" in capsys.readouterr().err
    finally:
        broker.stop()
