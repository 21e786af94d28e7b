"""`canopy provision`: identity, broker, TLS key + CSR (signed by a lab CA), 0600 password file; weak passwords refused."""

from __future__ import annotations

import io
import stat

import pytest
import yaml
from cryptography import x509

from gateway.cli.ops import main as ops_main
from gateway.config.load import load_config
from gateway.ops.provision import (ProvisionError, ProvisionRequest, ask_missing, parse_broker_url, password_problem,
                                   provision)
from tests.support import make_tls

GOOD = "correct-horse-battery"


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def request(tmp_path, **kw) -> ProvisionRequest:
    return ProvisionRequest(**{"site": "green-valley", "gateway": "farm-gw-01", "broker_url": "mqtts://mqtt.example.org",
                               "etc": tmp_path / "etc", "state": tmp_path / "state", "username": "farm-gw-01",
                               "password": GOOD, **kw})


def test_broker_urls():
    assert parse_broker_url("mqtts://mqtt.example.org") == (True, "mqtt.example.org", 8883)
    assert parse_broker_url("mqtt://10.0.0.5:1884") == (False, "10.0.0.5", 1884)
    assert parse_broker_url("broker.lan") == (True, "broker.lan", 8883)
    with pytest.raises(ProvisionError, match="scheme must be one of"):
        parse_broker_url("http://x")
    with pytest.raises(ProvisionError, match="port is not a number"):
        parse_broker_url("mqtts://x:99999")


@pytest.mark.parametrize("password, why", [("", "empty"), ("   ", "empty"), (None, "empty"), ("changeme", "default"),
                                           ("Password", "default"), ("farm-gw-01", "default"), ("raspberry", "default"),
                                           ("short1", "shorter than 10")])
def test_default_short_or_empty_passwords_are_refused(password, why):
    assert why in password_problem(password, username="farm-gw-01", site="green-valley", gateway="farm-gw-01")


def test_provision_with_a_lab_ca_writes_a_valid_private_site(tmp_path):
    lab = tmp_path / "lab"
    lab.mkdir()
    ca = make_tls(lab)
    done = provision(request(tmp_path, ca=lab / "ca.pem", sign_with=(lab / "ca.pem", lab / "server.key")))
    etc = tmp_path / "etc"
    assert done.site_file == etc / "site.yaml"
    data = yaml.safe_load(done.site_file.read_text())
    assert data["site"] == "green-valley" and data["gateway"] == "farm-gw-01"
    assert data["broker"] == {"host": "mqtt.example.org", "port": 8883, "tls": {"ca": "ca.pem", "cert": "client.pem", "key": "client.key"},
                              "username": "farm-gw-01", "password_file": "mqtt.password"}
    assert data["store"]["path"] == str(tmp_path / "state" / "outbox.sqlite")
    assert (etc / "mqtt.password").read_text().strip() == GOOD
    assert mode(etc / "mqtt.password") == 0o600 and mode(etc / "client.key") == 0o600
    cert = x509.load_pem_x509_certificate((etc / "client.pem").read_bytes())
    csr = x509.load_pem_x509_csr((etc / "client.csr").read_bytes())
    assert cert.subject == csr.subject and "CN=farm-gw-01" in cert.subject.rfc4514_string()
    assert cert.issuer.rfc4514_string() == "CN=Canopy Test CA" and ca
    assert load_config(done.site_file).site.broker.tls.cert == "client.pem"


def test_without_a_ca_only_the_csr_is_made(tmp_path):
    done = provision(request(tmp_path))
    etc = tmp_path / "etc"
    assert (etc / "client.csr").exists() and not (etc / "client.pem").exists()
    assert "# cert: client.pem" in done.site_file.read_text()
    assert any("send" in s and "client.csr" in s for s in done.next_steps)


def test_refusals_write_nothing(tmp_path):
    with pytest.raises(ProvisionError, match="default or guessable"):
        provision(request(tmp_path, password="admin"))
    with pytest.raises(ProvisionError, match="site id 'bad site'"):
        provision(request(tmp_path, site="bad site"))
    assert not (tmp_path / "etc").exists()


def test_an_existing_site_needs_force_and_is_kept_as_bak(tmp_path):
    provision(request(tmp_path))
    with pytest.raises(ProvisionError, match="pass --force"):
        provision(request(tmp_path))
    provision(request(tmp_path, gateway="farm-gw-02", username="farm-gw-02", force=True))
    assert "farm-gw-01" in (tmp_path / "etc" / "site.yaml.bak").read_text()
    assert "farm-gw-02" in (tmp_path / "etc" / "site.yaml").read_text()


def test_interactive_answers_fill_what_flags_did_not(tmp_path):
    answers = iter(["green-valley", "farm-gw-01", "mqtts://mqtt.example.org", ""])
    secrets = iter([GOOD, GOOD])
    filled = ask_missing({"site": None, "gateway": None, "broker_url": None, "username": None, "password": None},
                         lambda text, default: next(answers), lambda text: next(secrets))
    assert filled == {"site": "green-valley", "gateway": "farm-gw-01", "broker_url": "mqtts://mqtt.example.org",
                      "username": "farm-gw-01", "password": GOOD}  # empty user name: the default, the gateway id
    secrets = iter([GOOD, GOOD + "x"])
    with pytest.raises(ProvisionError, match="differ"):
        ask_missing({"site": "s", "gateway": "g", "broker_url": "u", "username": "g"}, lambda t, d: "", lambda t: next(secrets))


def test_cli_non_interactive_with_password_on_stdin(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO(GOOD + "\n"))
    rc = ops_main(["provision", "--site", "s1", "--gateway", "gw1", "--broker", "mqtts://broker.lan", "--username", "gw1",
                   "--password-stdin", "--etc", str(tmp_path / "etc"), "--state-dir", str(tmp_path / "state"), "--non-interactive"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert f"wrote {tmp_path / 'etc' / 'site.yaml'}" in out.out and "next:" in out.out
    monkeypatch.setattr("sys.stdin", io.StringIO("\n"))
    rc = ops_main(["provision", "--site", "s1", "--gateway", "gw1", "--broker", "mqtts://broker.lan", "--username", "gw1",
                   "--password-stdin", "--etc", str(tmp_path / "etc2"), "--non-interactive"])
    assert rc == 2 and "error: the broker password is empty" in capsys.readouterr().err


def test_cli_says_what_is_missing(tmp_path, capsys):
    rc = ops_main(["provision", "--site", "s1", "--etc", str(tmp_path), "--non-interactive"])
    assert rc == 2 and "missing --gateway, --broker" in capsys.readouterr().err
