"""Broker management: dev PKI, fleet credentials and ACL generation, the config, and the secured listeners'
refusals (no client certificate, a certificate of the wrong CA, no password on the plain listener) against a real
mosquitto. The hardening (shared subscriptions, identity binding, client ids, kill -9) is in test_broker_security.py."""

from __future__ import annotations

import dataclasses
import json
import socket
import subprocess
from pathlib import Path

import pytest

from edge_runtime.transport.remote import EdgeTransportConfig, RemoteVerifier, RemoteVerifierError
from qsv_tools.broker import plugin
from qsv_tools.broker.certs import create_ca, issue_cert
from qsv_tools.broker.cli import broker_main, certs_main
from qsv_tools.broker.config import ListenerConfig, render_config
from qsv_tools.broker.fleet import Fleet, render_acl

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
    for name in ("broker", "ca", "verifier-ca"):  # file names of the PKI directory
        for devices, verifiers in (((name,), ("verifier",)), (("board-01",), (name,))):
            with pytest.raises(ValueError, match="reserved"):
                Fleet(devices, verifiers)
    with pytest.raises(ValueError, match="reserved"):  # its bound client id would be a worker's
        Fleet(("qsv-verifier-w1",))
    fleet = Fleet(("board-01",), ("verifier",))
    acl = render_acl(fleet)
    assert "pattern write qsv/v1/%u/draft\n" in acl and "pattern read qsv/v1/%u/feedback\n" in acl
    assert "user verifier\ntopic read qsv/v1/+/draft\n" in acl
    assert "board-01" not in acl  # device rules are patterns: one ACL serves any fleet size
    assert "user verifier" not in render_acl(fleet, verifiers=False)
    assert "pattern" not in render_acl(fleet, devices=False)


def test_config_has_nodelay_per_listener_auth_and_no_persistence(tmp_path: Path) -> None:
    tls = ListenerConfig(1235, cafile=tmp_path / "ca", certfile=tmp_path / "c", keyfile=tmp_path / "k")
    conf = render_config([ListenerConfig(1234, password_file=tmp_path / "passwd", acl_file=tmp_path / "acl"), tls])
    lines = conf.splitlines()
    for needed in ("per_listener_settings true", "set_tcp_nodelay true", "persistence false", "listener 1234 127.0.0.1",
                   "allow_anonymous false", "require_certificate true", "tls_version tlsv1.2"):
        assert needed in lines
    with pytest.raises(ValueError):
        render_config([ListenerConfig(1, certfile=tmp_path / "c")])
    bound = dataclasses.replace(tls, use_identity_as_username=True, use_username_as_clientid=True,
                                password_file=tmp_path / "passwd")
    lines = render_config([bound]).splitlines()
    assert "use_identity_as_username true" in lines and "use_username_as_clientid true" in lines
    assert "allow_anonymous false" in lines and not any(x.startswith("password_file") for x in lines)
    with pytest.raises(ValueError, match="use_identity_as_username"):
        render_config([ListenerConfig(1, use_identity_as_username=True)])
    # a plugin belongs to its listener's block (per_listener_settings), its options right after it
    plugged = dataclasses.replace(tls, password_file=tmp_path / "passwd", plugin=tmp_path / "p.so",
                                  plugin_opts=(("topic_prefix", "qsv/v1/"), ("read_topics", "feedback,bench/#")))
    blocks = render_config([plugged, ListenerConfig(1236)]).split("\nlistener ")
    assert f"plugin {tmp_path / 'p.so'}\nplugin_opt_topic_prefix qsv/v1/\nplugin_opt_read_topics feedback,bench/#" \
        in blocks[1] and "plugin" not in blocks[0] + blocks[2]
    with pytest.raises(ValueError, match="plugin_opts"):
        render_config([dataclasses.replace(tls, plugin_opts=(("a", "b"),))])


def test_auth_plugin_build_caches_and_names_what_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QSV_AUTH_PLUGIN", raising=False)
    monkeypatch.delenv("CC", raising=False)
    if plugin.build_auth_plugin(tmp_path / "probe").path is None:
        pytest.skip("no C compiler or mosquitto/openssl headers here (scripts/bootstrap.sh installs them)")
    built = plugin.build_auth_plugin(tmp_path / "a")
    assert built.path == tmp_path / "a" / "qsv_auth_plugin.so" and built.path.is_file()
    mtime = built.path.stat().st_mtime_ns
    assert plugin.build_auth_plugin(tmp_path / "a").path == built.path and built.path.stat().st_mtime_ns == mtime
    nm = subprocess.run(["nm", "-D", "--defined-only", str(built.path)], capture_output=True, text=True).stdout
    assert {"mosquitto_plugin_version", "mosquitto_plugin_init", "mosquitto_plugin_cleanup"} <= set(nm.split())
    # a header that is not installed: the result names it and its Debian package
    source = tmp_path / "needs_missing.c"
    source.write_text("#include <mosquitto_nonexistent.h>\n#include <openssl/nonexistent.h>\n")
    missing = plugin.build_auth_plugin(tmp_path / "b", source=source)
    assert missing.path is None and "mosquitto_nonexistent.h" in missing.missing
    source.write_text("#include <openssl/nonexistent.h>\n")
    assert "libssl-dev" in plugin.build_auth_plugin(tmp_path / "b", source=source).missing
    monkeypatch.setenv("CC", "no-such-cc")
    assert plugin.build_auth_plugin(tmp_path / "c").missing == "a C compiler (no-such-cc not found on PATH)"
    monkeypatch.setenv("QSV_AUTH_PLUGIN", str(built.path))  # a prebuilt plugin (an installed package)
    assert plugin.build_auth_plugin(tmp_path / "d").path == built.path.resolve()
    monkeypatch.setenv("QSV_AUTH_PLUGIN", str(tmp_path / "nope.so"))
    assert "no such file" in plugin.build_auth_plugin(tmp_path / "d").missing


def test_clis_generate_a_complete_setup(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text("devices: [board-01, board-02]\nverifiers: [verifier]\n")
    assert broker_main(["--workdir", str(tmp_path / "b"), "--fleet", str(fleet), "--generate-only",
                        "--tls-port", "18883", "--verifier-port", "18884", "--plain-port", "11883"]) == 0
    for name in ("mosquitto.conf", "acl", "acl-devices", "acl-verifiers", "passwd", "credentials.json",
                 "endpoints.json", "share-group", "pki/ca.crt", "pki/verifier-ca.crt", "pki/board-02.key",
                 "pki/broker.crt", "pki/verifier.crt"):
        assert (tmp_path / "b" / name).exists(), name
    conf = (tmp_path / "b" / "mosquitto.conf").read_text()
    assert "listener 18883 " in conf and "listener 18884 " in conf and "11883" not in conf  # no plain listener
    passwd = (tmp_path / "b" / "passwd").read_text()
    assert passwd.count("$7$") == 3  # hashed by mosquitto_passwd, no plaintext
    creds = json.loads((tmp_path / "b" / "credentials.json").read_text())
    assert ((tmp_path / "b" / "credentials.json").stat().st_mode & 0o777) == 0o600
    endpoints = (tmp_path / "b" / "endpoints.json").read_text()
    assert all(pw not in endpoints and pw not in passwd for pw in creds.values())
    assert json.loads(endpoints)["board-01"]["tls_port"] == 18883
    assert json.loads(endpoints)["verifier"]["tls_port"] == 18884
    assert "plain_port" not in json.loads(endpoints)["board-01"]
    assert broker_main(["--workdir", str(tmp_path / "d"), "--device-id", "board-01", "--generate-only",
                        "--plain-port", "11883", "--insecure-dev"]) == 0
    assert "listener 11883 " in (tmp_path / "d" / "mosquitto.conf").read_text()
    assert json.loads((tmp_path / "d" / "endpoints.json").read_text())["board-01"]["plain_port"] == 11883
    assert certs_main(["--out", str(tmp_path / "pki"), "--device-id", "board-09"]) == 0
    assert (tmp_path / "pki" / "board-09.crt").exists() and (tmp_path / "pki" / "verifier-ca.crt").exists()


def test_tls_listener_refuses_bad_clients_and_sets_nodelay(mosquitto_broker, tmp_path: Path) -> None:
    good = mosquitto_broker.endpoint("dev-a", tls=True)
    with RemoteVerifier("dev-a", good, QUICK) as remote:
        sock = remote.client.socket()
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    other = issue_cert(tmp_path, create_ca(tmp_path, "another CA"), "dev-a")
    bad_endpoints = {
        "no client certificate": dataclasses.replace(good, cert_file=None, key_file=None),
        "a certificate of another CA": dataclasses.replace(good, cert_file=other.cert, key_file=other.key),
        "a device certificate on the verifiers' listener": dataclasses.replace(good,
                                                                             port=mosquitto_broker.verifier_port),
    }
    for why, ep in bad_endpoints.items():
        with pytest.raises((RemoteVerifierError, OSError)):  # noqa: PT012
            RemoteVerifier("dev-a", ep, QUICK).connect()
            pytest.fail(f"connected with {why}")
    if mosquitto_broker.auth_plugin is not None:  # a wrong password on the devices' listener: refused, with the why
        with pytest.raises(RemoteVerifierError, match="username 'dev-a' = the certificate's CN, and its password"):
            RemoteVerifier("dev-a", dataclasses.replace(good, password="wrong"), QUICK).connect()
    plain = mosquitto_broker.endpoint("dev-a", tls=False)  # this broker opted in to the plain listener
    for ep in (dataclasses.replace(plain, username=None, password=None), dataclasses.replace(plain, password="x")):
        with pytest.raises((RemoteVerifierError, OSError)):
            RemoteVerifier("dev-a", ep, QUICK).connect()


def test_client_rejects_a_broker_of_another_ca(mosquitto_broker, tmp_path: Path) -> None:
    other = create_ca(tmp_path / "other-ca")
    ep = dataclasses.replace(mosquitto_broker.endpoint("dev-a", tls=True), ca_file=other.cert)
    with pytest.raises(OSError):  # ssl.SSLCertVerificationError is an OSError
        RemoteVerifier("dev-a", ep, QUICK).connect()
