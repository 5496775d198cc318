"""Broker management: dev PKI, fleet credentials and ACL generation, the config, and the secured listener's
refusals (no client certificate, wrong password, unknown CA) against a real mosquitto."""

from __future__ import annotations

import dataclasses
import json
import socket
import subprocess
from pathlib import Path

import pytest

from edge_runtime.broker.certs import create_ca, issue_cert
from edge_runtime.broker.cli import broker_main, certs_main
from edge_runtime.broker.config import ListenerConfig, render_config
from edge_runtime.broker.fleet import Fleet, render_acl
from edge_runtime.transport.remote import EdgeTransportConfig, RemoteVerifier, RemoteVerifierError

QUICK = EdgeTransportConfig(connect_timeout_s=2.0)


def test_dev_pki_verifies_and_server_cert_has_sans(tmp_path: Path) -> None:
    ca = create_ca(tmp_path)
    server = issue_cert(tmp_path, ca, "broker", server=True, hosts=("localhost", "127.0.0.1", "mq.example.org"))
    device = issue_cert(tmp_path, ca, "board-01")
    for cert in (server.cert, device.cert):
        out = subprocess.run(["openssl", "verify", "-CAfile", str(ca.cert), str(cert)], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
    text = subprocess.run(["openssl", "x509", "-in", str(server.cert), "-noout", "-text"], capture_output=True,
                          text=True).stdout
    assert "DNS:localhost" in text and "IP Address:127.0.0.1" in text and "DNS:mq.example.org" in text
    assert "TLS Web Server Authentication" in text
    assert (device.key.stat().st_mode & 0o777) == 0o600
    other_ca = create_ca(tmp_path / "other")
    out = subprocess.run(["openssl", "verify", "-CAfile", str(other_ca.cert), str(device.cert)], capture_output=True)
    assert out.returncode != 0


def test_fleet_validation_and_acl() -> None:
    with pytest.raises(ValueError):
        Fleet(("a/b",))
    with pytest.raises(ValueError):
        Fleet(("x",), ("x",))
    with pytest.raises(ValueError):
        Fleet((), ("v",))
    acl = render_acl(Fleet(("board-01",), ("verifier",)))
    assert "pattern write qsv/v1/%u/draft\n" in acl and "pattern read qsv/v1/%u/feedback\n" in acl
    assert "user verifier\ntopic read qsv/v1/+/draft\n" in acl
    assert "board-01" not in acl  # device rules are patterns: one ACL serves any fleet size


def test_config_has_nodelay_per_listener_auth_and_no_persistence(tmp_path: Path) -> None:
    tls = ListenerConfig(1235, cafile=tmp_path / "ca", certfile=tmp_path / "c", keyfile=tmp_path / "k")
    conf = render_config([ListenerConfig(1234, password_file=tmp_path / "passwd", acl_file=tmp_path / "acl"), tls])
    lines = conf.splitlines()
    for needed in ("per_listener_settings true", "set_tcp_nodelay true", "persistence false", "listener 1234 127.0.0.1",
                   "allow_anonymous false", "require_certificate true", "tls_version tlsv1.2"):
        assert needed in lines
    with pytest.raises(ValueError):
        render_config([ListenerConfig(1, certfile=tmp_path / "c")])


def test_clis_generate_a_complete_setup(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text("devices: [board-01, board-02]\nverifiers: [verifier]\n")
    assert broker_main(["--workdir", str(tmp_path / "b"), "--fleet", str(fleet), "--generate-only",
                        "--tls-port", "18883", "--plain-port", "11883"]) == 0
    for name in ("mosquitto.conf", "acl", "passwd", "credentials.json", "endpoints.json", "pki/ca.crt",
                 "pki/board-02.key", "pki/broker.crt"):
        assert (tmp_path / "b" / name).exists(), name
    passwd = (tmp_path / "b" / "passwd").read_text()
    assert passwd.count("$7$") == 3  # hashed by mosquitto_passwd, no plaintext
    creds = json.loads((tmp_path / "b" / "credentials.json").read_text())
    assert ((tmp_path / "b" / "credentials.json").stat().st_mode & 0o777) == 0o600
    endpoints = (tmp_path / "b" / "endpoints.json").read_text()
    assert all(pw not in endpoints and pw not in passwd for pw in creds.values())
    assert json.loads(endpoints)["board-01"]["tls_port"] == 18883
    assert certs_main(["--out", str(tmp_path / "pki"), "--device-id", "board-09"]) == 0
    assert (tmp_path / "pki" / "board-09.crt").exists()


def test_tls_listener_refuses_bad_clients_and_sets_nodelay(mosquitto_broker) -> None:
    good = mosquitto_broker.endpoint("dev-a", tls=True)
    with RemoteVerifier("dev-a", good, QUICK) as remote:
        sock = remote.client.socket()
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    bad_endpoints = {
        "no client certificate": dataclasses.replace(good, cert_file=None, key_file=None),
        "wrong password": dataclasses.replace(good, password="not-the-password"),
        "another device's password": dataclasses.replace(good, password=mosquitto_broker.passwords["dev-b"]),
    }
    for why, ep in bad_endpoints.items():
        with pytest.raises((RemoteVerifierError, OSError)):  # noqa: PT012
            RemoteVerifier("dev-a", ep, QUICK).connect()
            pytest.fail(f"connected with {why}")
    plain_no_password = dataclasses.replace(mosquitto_broker.endpoint("dev-a", tls=False), username=None,
                                            password=None)
    with pytest.raises((RemoteVerifierError, OSError)):
        RemoteVerifier("dev-a", plain_no_password, QUICK).connect()


def test_client_rejects_a_broker_of_another_ca(mosquitto_broker, tmp_path: Path) -> None:
    other = create_ca(tmp_path / "other-ca")
    ep = dataclasses.replace(mosquitto_broker.endpoint("dev-a", tls=True), ca_file=other.cert)
    with pytest.raises(OSError):  # ssl.SSLCertVerificationError is an OSError
        RemoteVerifier("dev-a", ep, QUICK).connect()
