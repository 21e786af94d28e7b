"""The web component: loopback by default, HTTPS with a certificate, no plain HTTP on the network unless allowed."""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import stat

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from centre.store.engine import create_engine
from centre.store.migrate import upgrade_async
from centre.web.bind import is_loopback, plain_http_problem
from core.yamlsrc import ConfigError
from tests.centre.web.support import PASSWORD, make_user, running_web


@pytest.fixture
async def sqlite_url(tmp_path):
    url = f"sqlite:///{tmp_path / 'centre.sqlite'}"
    await upgrade_async(url)
    return url


def test_only_loopback_may_serve_plain_http():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.20") and not is_loopback("centre.example")
    assert plain_http_problem("127.0.0.1", tls=False, allow_plain_http=False) is None
    assert plain_http_problem("0.0.0.0", tls=True, allow_plain_http=False) is None
    assert plain_http_problem("0.0.0.0", tls=False, allow_plain_http=True) is None
    problem = plain_http_problem("0.0.0.0", tls=False, allow_plain_http=False)
    assert "not a loopback address" in problem and "tls_cert" in problem and "allow_plain_http" in problem


async def test_a_network_bind_without_tls_is_a_config_error(tmp_path):
    from centre.config import load_config

    cfg = tmp_path / "centre.yaml"
    cfg.write_text("broker: {host: 127.0.0.1, port: 1883}\ndatabase: {url: 'sqlite:///c.sqlite'}\nhttp:\n  host: 0.0.0.0\n")
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    assert f"{cfg}:3: http" in str(err.value) and "0.0.0.0 is not a loopback address" in str(err.value)
    cfg.write_text("broker: {host: 127.0.0.1, port: 1883}\ndatabase: {url: 'sqlite:///c.sqlite'}\n"
                   "http:\n  host: 0.0.0.0\n  allow_plain_http: true\n")
    assert load_config(cfg).http.allow_plain_http  # behind a TLS-terminating proxy, said explicitly


async def test_a_busy_port_is_a_clear_error(sqlite_url):
    async with running_web(sqlite_url) as first:
        port = int(first.components["web.url"].rsplit(":", 1)[1])
        with pytest.raises(ConfigError) as err:
            async with running_web(sqlite_url, port=port):
                pass
    assert f"cannot listen on 127.0.0.1:{port}" in str(err.value)


def _self_signed(tmp_path) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = tmp_path / "centre.crt", tmp_path / "centre.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_file.chmod(0o600)
    return str(cert_file), str(key_file)


async def test_https_with_a_certificate_and_secure_cookies(sqlite_url, tmp_path):
    cert, key = _self_signed(tmp_path)
    engine = create_engine(sqlite_url)
    await make_user(engine, "duty", "duty_desk")
    await engine.dispose()
    async with running_web(sqlite_url, tls_cert=cert, tls_key=key) as centre:
        url = centre.components["web.url"]
        assert url.startswith("https://127.0.0.1:")
        async with httpx.AsyncClient(base_url=url, verify=ssl.create_default_context(cafile=cert)) as c:
            assert (await c.get("/health")).json()["database"] == "ok"
            r = await c.post("/api/login", json={"username": "duty", "password": PASSWORD})
            assert r.status_code == 200
            assert all("Secure" in h and "SameSite=strict" in h for h in r.headers.get_list("set-cookie"))
            assert (await c.get("/api/me")).json()["username"] == "duty"
        async with httpx.AsyncClient(base_url=url.replace("https", "http")) as plain:
            with pytest.raises(httpx.HTTPError):
                await plain.get("/health")


async def test_unreadable_certificate_is_a_config_error(sqlite_url, tmp_path):
    with pytest.raises(ConfigError) as err:
        async with running_web(sqlite_url, tls_cert=str(tmp_path / "none.crt"), tls_key=str(tmp_path / "none.key")):
            pass
    assert "http.tls_cert: cannot read" in str(err.value)


async def test_https_with_the_centres_own_certificate_reused_at_the_next_start(sqlite_url, tmp_path):
    """``self_signed``: HTTPS at once with a certificate the centre made (key 0600 in a 0700 folder), the same one
    at the next start (its fingerprint is what the installer accepted in the browser); never plain HTTP."""
    from centre.web import selfsigned

    tls_dir = tmp_path / "tls"
    old = os.umask(0o022)
    try:
        async with running_web(sqlite_url, self_signed=True, tls_dir=str(tls_dir)) as centre:
            url = centre.components["web.url"]
            assert url.startswith("https://127.0.0.1:")
            cafile = str(tls_dir / "centre.crt")
            async with httpx.AsyncClient(base_url=url, verify=ssl.create_default_context(cafile=cafile)) as c:
                assert (await c.get("/health")).json()["database"] == "ok"
    finally:
        os.umask(old)
    assert stat.S_IMODE((tls_dir / "centre.key").stat().st_mode) == 0o600
    assert stat.S_IMODE(tls_dir.stat().st_mode) == 0o700
    first = selfsigned.ensure(str(tls_dir), selfsigned.names_for("127.0.0.1"))
    assert not first.made  # reused, not made again
    async with running_web(sqlite_url, self_signed=True, tls_dir=str(tls_dir)) as centre:
        async with httpx.AsyncClient(base_url=centre.components["web.url"],
                                     verify=ssl.create_default_context(cafile=str(tls_dir / "centre.crt"))) as c:
            assert (await c.get("/health")).status_code == 200
    assert selfsigned.ensure(str(tls_dir), selfsigned.names_for("127.0.0.1")).fingerprint == first.fingerprint


def test_a_self_signed_certificate_near_its_end_or_for_other_names_is_made_again(tmp_path):
    from centre.web import selfsigned

    first = selfsigned.ensure(str(tmp_path), ["canopy.test", "127.0.0.1"])
    assert first.made
    assert not selfsigned.ensure(str(tmp_path), ["canopy.test"]).made
    assert selfsigned.ensure(str(tmp_path), ["hall.local"]).made  # a name it does not carry
    late = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=selfsigned.VALID_DAYS - 10)
    assert selfsigned.ensure(str(tmp_path), ["hall.local"], now=late).made


def test_self_signed_opens_a_non_loopback_address_and_excludes_a_given_certificate():
    from centre.config import Http

    assert Http.model_validate({"host": "0.0.0.0", "self_signed": True}).self_signed
    with pytest.raises(ValueError, match="either"):
        Http.model_validate({"host": "0.0.0.0", "self_signed": True, "tls_cert": "a", "tls_key": "b"})
    with pytest.raises(ValueError, match="self_signed"):
        Http.model_validate({"host": "0.0.0.0"})
