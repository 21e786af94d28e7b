"""`canopy doctor`: every check with its fix, on a fake board (dev, sys, etc) and a real mosquitto; exit 0/1."""

from __future__ import annotations

import hashlib
import json
import os

import pytest
import yaml

from gateway.cli.ops import main as ops_main
from gateway.ops.checklist import FAIL, OK, WARN, Host, exit_code, render
from gateway.ops.doctor import Doctor
from tests.support import PROFILES, Mosquitto, free_port, make_password_file, make_tls


@pytest.fixture
def pty():
    master, slave = os.openpty()
    yield os.ttyname(slave)
    os.close(master)
    os.close(slave)


def fake_host(tmp_path, port: str | None = None, latency: int | None = None, synced=True) -> Host:
    dev, sys_, etc = tmp_path / "dev", tmp_path / "sys", tmp_path / "etc"
    (dev / "serial" / "by-id").mkdir(parents=True)
    etc.mkdir()
    os.symlink("/usr/share/zoneinfo/Asia/Shanghai", etc / "localtime")
    if port:
        os.symlink(port, dev / "serial" / "by-id" / "usb-FTDI_FT232R_USB_UART_A10KXYZ1-if00-port0")
        if latency is not None:
            timer = sys_ / "bus" / "usb-serial" / "devices" / os.path.basename(port) / "latency_timer"
            timer.parent.mkdir(parents=True)
            timer.write_text(f"{latency}\n")
    return Host(dev=dev, sys=sys_, etc=etc, clock_synced=lambda: synced)


def site(tmp_path, *, broker: dict | None, buses: list | None = None, store: str | None = None, **top):
    data = {"site": "green-valley", "gateway": "gw-1", "profiles_dir": str(PROFILES),
            "store": {"path": store or str(tmp_path / "state" / "outbox.sqlite")}, "buses": buses or [], **top}
    if broker is not None:
        data["broker"] = broker
    (tmp_path / "state").mkdir(exist_ok=True)
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


def rtu(port: str) -> dict:
    return {"id": "field-485", "type": "modbus_rtu", "port": port, "devices": [{"id": "soil-1", "unit": 1, "profile": "soil_probe"}]}


def by_name(checks):
    return {c.name: c for c in checks}


@pytest.fixture
def tls_broker(tmp_path):
    tls = make_tls(tmp_path)
    broker = Mosquitto(tmp_path, tls=tls, password_file=make_password_file(tmp_path, "gw-1", "correct-horse-battery")).start()
    yield broker, tls
    broker.stop()


def test_a_healthy_board_passes_with_warnings_and_their_fixes(tmp_path, tls_broker, pty):
    broker, tls = tls_broker
    secret = tmp_path / "mqtt.password"
    secret.write_text("correct-horse-battery\n")
    secret.chmod(0o600)
    config = site(tmp_path, broker={"host": "127.0.0.1", "port": broker.port, "tls": {"ca": tls["ca"]},
                                    "username": "gw-1", "password_file": str(secret)}, buses=[rtu(pty)])
    checks = by_name(Doctor(config, host=fake_host(tmp_path, pty, latency=16)).run())
    assert checks["config"].status == OK
    assert checks["state paths"].status == OK
    assert checks["disk"].status == OK and "MiB free" in checks["disk"].detail
    assert checks["broker"].status == OK and "connected and logged in as gw-1" in checks["broker"].detail
    assert checks["tls ca"].status == WARN and "days left" in checks["tls ca"].detail and "renew" in checks["tls ca"].fix
    serial = checks["serial field-485"]
    assert serial.status == WARN and "port: " + str(tmp_path / "dev/serial/by-id/usb-FTDI") in serial.fix
    latency = checks["latency field-485"]
    assert latency.status == WARN and "16 ms" in latency.detail and 'ATTR{latency_timer}="1"' in latency.fix
    assert checks["clock"].status == OK and checks["time zone"].detail == "Asia/Shanghai"
    assert exit_code(list(checks.values())) == 0


def test_a_broken_board_fails_each_check_with_a_fix(tmp_path):
    dead = free_port()
    config = site(tmp_path, broker={"host": "127.0.0.1", "port": dead}, buses=[rtu("/dev/ttyUSB-canopy-test-absent")],
                  store=str(tmp_path / "missing" / "outbox.sqlite"))
    host = fake_host(tmp_path, synced=False)
    (host.etc / "localtime").unlink()
    checks = by_name(Doctor(config, host=host, broker_timeout=2).run())
    for name, words in [("state paths", "does not exist"), ("serial field-485", "not found"),
                        ("broker", f"127.0.0.1:{dead}"), ("clock", "not synchronised")]:
        assert checks[name].status == FAIL and words in checks[name].detail, checks[name]
        assert checks[name].fix
    assert checks["time zone"].status == WARN and "UTC" in checks["time zone"].detail
    assert exit_code(list(checks.values())) == 1
    text = "\n".join(render(list(checks.values())))
    assert "FAIL  broker" in text and "fix: check the host and port" in text and "4 failed" in text


def test_an_invalid_config_is_one_failure_and_the_board_is_still_checked(tmp_path):
    path = tmp_path / "site.yaml"
    path.write_text("site: s\ngateway: g\nbrokr: {}\n")
    checks = Doctor(str(path), host=fake_host(tmp_path)).run()
    assert checks[0].name == "config" and checks[0].status == FAIL and "site.yaml:3: brokr: unknown key" in checks[0].detail
    assert "canopy validate" in checks[0].fix
    assert [c.name for c in checks[1:]] == ["clock", "time zone"]


def test_expired_client_certificate_fails(tmp_path):
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gw-1")])
    past = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=400)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(past).not_valid_after(past + datetime.timedelta(days=365)).sign(key, hashes.SHA256()))
    (tmp_path / "client.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "client.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                            serialization.NoEncryption()))
    (tmp_path / "client.key").chmod(0o600)
    from gateway.ops.doctor_net import certificates
    from gateway.ops.doctor import load

    cfg, problems = load(site(tmp_path, broker={"host": "127.0.0.1", "port": 1, "tls": {"cert": "client.pem", "key": "client.key"}}))
    assert cfg is not None, problems
    (check,) = certificates(cfg, 30)
    assert check.status == FAIL and "is not valid now" in check.detail and "CN=gw-1" in check.detail


def test_camera_models_present_and_verified(tmp_path):
    from gateway.ops.doctor import load
    from gateway.ops.doctor_net import models

    (tmp_path / "v.avi").write_bytes(b"x")
    (tmp_path / "pose.tflite").write_bytes(b"model")
    good = hashlib.sha256(b"model").hexdigest()
    cams = [{"id": "hall", "source": {"type": "file", "path": "v.avi"},
             "detectors": [{"type": "pose_fall", "model": "pose.tflite", "model_sha256": good}]},
            {"id": "yard", "source": {"type": "file", "path": "v.avi"},
             "detectors": [{"type": "pose_fall", "model": "pose.tflite", "model_sha256": "0" * 64}]},
            {"id": "shed", "source": {"type": "file", "path": "v.avi"}, "detectors": [{"type": "pose_fall", "model": "gone.tflite"}]}]
    cfg, problems = load(site(tmp_path, broker=None, cameras=cams))
    assert cfg is not None, problems
    checks = by_name(models(cfg))
    assert checks["model hall/fall"].status == OK and "verified" in checks["model hall/fall"].detail
    assert checks["model yard/fall"].status == FAIL and "does not match" in checks["model yard/fall"].detail
    assert checks["model shed/fall"].status == FAIL and "not found" in checks["model shed/fall"].detail


def test_cli_doctor_json_and_exit_code(tmp_path, capsys):
    path = tmp_path / "site.yaml"
    path.write_text("site: s\n")
    rc = ops_main(["doctor", "-c", str(path), "--json"])
    checks = json.loads(capsys.readouterr().out)
    assert rc == 1 and checks[0]["name"] == "config" and checks[0]["status"] == "fail"
