"""Broker hardening against a real mosquitto 2.0 (issue "Hardening", items 1 and 6):

- devices cannot take a share of the verifiers' shared subscription: the auth plugin (qsv_auth_plugin.c) refuses a
  device's SUBSCRIBE to anything but its own readable topics (SUBACK 0x87; mosquitto 2.0.11's acl_file never refuses
  a SUBSCRIBE), and the group name is a verifier secret (the only defence where the plugin could not be built: a
  message the round robin assigns to a member without read access is dropped);
- a mutual-TLS broker has no plain listener unless it is asked for (``--insecure-dev``);
- the client certificate binds the username (CN = username, checked at CONNECT), then the password file decides:
  another device's username or password gives no connection (without the plugin: no rights);
- client ids are bound to the username on the devices' listener (``<username>`` or ``<username>:<role>``): no
  session takeover of a board or a worker, and a device's runtime and bench connect side by side;
- ``kill -9`` of ``qsv broker`` leaves no mosquitto behind.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from doubles.toy import (
    TOY_CODEC_MODE,
    TOY_VOCAB_HASH,
    ToyDrafter,
    ToyVerifier,
    generate_remote,
    reference_generation,
)
from mqtt_probe import Probe

from cloud_verifier.mqtt_service import MqttVerifierService, WorkerConfig
from edge_runtime.transport.remote import EdgeTransportConfig, RemoteVerifier
from qsv_tools.broker.certs import create_ca, issue_cert
from qsv_tools.broker.fleet import Fleet
from qsv_tools.broker.process import DevBroker, free_port
from qsv_wire import topics
from qsv_wire.mqtt_common import BrokerEndpoint
from qsv_wire.protocol import OpenAck, OpenSession, SamplingParams, decode, encode

ROOT = Path(__file__).resolve().parents[1]
BOARD = "board"
ATTACKERS = tuple(f"att-{i:02d}" for i in range(10))
PROMPT = [3, 1, 4, 1, 5]
ONE_SHOT = EdgeTransportConfig(open_timeout_s=2.0, feedback_timeout_s=2.0, max_resends=0, max_resyncs=0,
                               recovery_deadline_s=2.0)  # an open that is not answered at once raises
PATIENT = EdgeTransportConfig(open_timeout_s=2.0, feedback_timeout_s=2.0)
NOT_AUTHORIZED = 0x87


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevBroker]:
    """The production layout: TLS listeners only (no ``insecure_dev``), a board, ten other devices, one verifier."""
    broker = DevBroker(tmp_path_factory.mktemp("secure-broker"), Fleet((BOARD, *ATTACKERS), ("verifier",))).start()
    yield broker
    broker.stop()


def _refused(endpoint: BrokerEndpoint) -> bool:
    try:
        Probe("probe-refused", endpoint).close()
    except (ConnectionError, OSError):
        return True
    return False


def _connack_refusal(endpoint: BrokerEndpoint) -> str | None:
    """The CONNACK reason of a refused CONNECT (None: connected, or no CONNACK at all)."""
    try:
        Probe("probe-refused", endpoint).close()
    except ConnectionError as exc:
        return str(exc).rsplit("(", 1)[-1].rstrip(")")
    return None


# ------------------------------------------------------------------------------------------ (a) shared subscriptions
def _refused_filters(broker: DevBroker, device: str) -> list[str]:
    """What a device tries to subscribe to beyond its own readable topics."""
    p, group = topics.TOPIC_PREFIX, broker.share_group
    return [f"$share/{group}/{p}/+/draft", f"$share/{group}/{p}/+/draft/+", f"$share/{group}/#",
            f"$share/{topics.DEFAULT_SHARE_GROUP}/{p}/+/draft", f"$share/{device}/{p}/{device}/feedback",
            "#", "+/#", "$SYS/#", "$SYS/broker/clients/connected", f"{p}/+/draft", f"{p}/+/feedback", f"{p}/#",
            f"{p}/{device}/#", f"{p}/{device}/+", f"{p}/{device}/bench/+", f"{p}/{device}/bench/#",
            topics.feedback_topic(BOARD), topics.open_topic(BOARD), f"{p}/{BOARD}/bench/x",
            topics.open_topic(device), topics.worker_topic(device, "w1"), f"{p}/{device}/feedback/x",
            f"{p}/{device}", f"{p}/{device}feedback", "qsv/v2/" + device + "/feedback"]


def _open_round(board: Probe, first: int) -> int:
    """24 opens from the board (raw PUBLISHes, no retries); how many got an OpenAck within 1.5 s."""
    board.messages.clear()
    for i in range(24):
        board.publish(topics.open_topic(BOARD), encode(OpenSession(BOARD, first + i, (1, 2), SamplingParams(), 64,
                                                                   TOY_VOCAB_HASH)), corr=b"%d" % i)
    board.pump(1.5)
    return sum(isinstance(decode(m.payload), OpenAck) for m in board.messages)


def test_devices_subscribe_only_to_their_own_topics(secure_broker: DevBroker) -> None:
    broker = secure_broker
    assert broker.auth_plugin is not None and broker.auth_plugin.is_file()
    device = ATTACKERS[0]
    probe = Probe(f"probe-{device}", broker.endpoint(device))
    try:
        for topic in _refused_filters(broker, device):
            assert probe.subscribe(topic).value == NOT_AUTHORIZED, topic
        for topic in (topics.feedback_topic(device), f"{topics.TOPIC_PREFIX}/{device}/bench/ab12",
                      f"{topics.TOPIC_PREFIX}/{device}/bench"):
            assert probe.subscribe(topic).value == 1, topic  # granted, QoS 1
        assert probe.client.is_connected() and not probe.disconnects  # a refused filter does not cost the session
        # what is granted is delivered: the device's own bench echo
        assert not probe.publish(f"{topics.TOPIC_PREFIX}/{device}/bench/ab12", b"echo").is_failure
        assert probe.loop.pump_until(lambda: any(m.payload == b"echo" for m in probe.messages), 5.0)
    finally:
        probe.close()
    log = (broker.workdir / "mosquitto.log").read_text()
    assert f"qsv_auth: refused SUBSCRIBE of '{device}' to '$share/{broker.share_group}/" in log


def test_devices_cannot_take_a_share_of_the_verifiers_opens(secure_broker: DevBroker) -> None:
    broker = secure_broker
    p = topics.TOPIC_PREFIX
    shared = [f"$share/{broker.share_group}/{p}/+/draft", f"$share/{broker.share_group}/{p}/+/draft/+",
              f"$share/{broker.share_group}/#", f"$share/{topics.DEFAULT_SHARE_GROUP}/{p}/+/draft",
              f"$share/{topics.DEFAULT_SHARE_GROUP}/#", f"{p}/+/draft", "#"]
    attackers = [Probe(f"probe-{name}", broker.endpoint(name)) for name in ATTACKERS]
    try:
        for attacker in attackers:
            for topic in shared:
                assert attacker.subscribe(topic).value == NOT_AUTHORIZED, topic  # the plugin refuses the SUBSCRIBE
        # even a verifier in the well-known group loses no open now: no attacker is a member of any group
        control = MqttVerifierService(ToyVerifier(), broker.endpoint("verifier"), WorkerConfig("w-control")).start()
        board = Probe("probe-board", broker.endpoint(BOARD))
        try:
            assert board.subscribe(topics.feedback_topic(BOARD)).value == 1
            assert _open_round(board, 1000) == 24
        finally:
            board.close()
            control.stop()
        # the verifier role's secret group, as deployed: the board's 24 opens are all answered by the verifier
        service = MqttVerifierService(ToyVerifier(), broker.endpoint("verifier"),
                                      WorkerConfig("w-secret", group=broker.share_group)).start()
        try:
            with RemoteVerifier(BOARD, broker.endpoint(BOARD), ONE_SHOT) as remote:
                for i in range(24):
                    ack = remote.open(PROMPT, SamplingParams(seed=i), 64, TOY_VOCAB_HASH)  # raises if unanswered
                    assert ack.worker_id == "w-secret"
                assert remote.stats.resyncs == 0 and remote.stats.resends == 0
            assert service.stats.received >= 24
        finally:
            service.stop()
        for attacker in attackers:
            attacker.pump(0.05)
            assert not attacker.messages  # nothing of the board's reached any device
    finally:
        for attacker in attackers:
            attacker.close()


def test_without_the_plugin_the_broker_runs_and_the_secret_group_still_protects(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """No C compiler (or headers): a WARNING that names what is missing, certificate-as-identity on the devices'
    listener, SUBSCRIBEs granted (0x01) but delivered nothing, and the secret group keeps the verifiers' opens."""
    monkeypatch.setenv("CC", "/nonexistent/cc")
    monkeypatch.delenv("QSV_AUTH_PLUGIN", raising=False)
    with caplog.at_level("WARNING", logger="qsv_tools.broker.process"):
        broker = DevBroker(tmp_path / "fallback", Fleet((BOARD, *ATTACKERS[:4]), ("verifier",))).start()
    try:
        warning = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert len(warning) == 1 and "a C compiler (/nonexistent/cc not found on PATH)" in warning[0]
        assert "mosquitto-dev" in warning[0] and "refused" in warning[0]
        assert broker.auth_plugin is None
        conf = (broker.workdir / "mosquitto.conf").read_text()
        assert "\nplugin" not in conf and conf.count("use_identity_as_username true") == 2
        attackers = [Probe(f"probe-{name}", broker.endpoint(name)) for name in ATTACKERS[:4]]
        try:
            well_known = f"$share/{topics.DEFAULT_SHARE_GROUP}/{topics.TOPIC_PREFIX}/+/draft"
            for attacker in attackers:  # granted (the gap the plugin closes), delivered nothing (read ACLs)
                assert attacker.subscribe(well_known).value == 1
                assert attacker.subscribe("#").value == 1
            control = MqttVerifierService(ToyVerifier(), broker.endpoint("verifier"),
                                          WorkerConfig("w-control")).start()
            board = Probe("probe-board", broker.endpoint(BOARD))
            try:
                board.subscribe(topics.feedback_topic(BOARD))
                assert _open_round(board, 2000) < 18  # round robin over 1 worker + 4 attackers: about 5 of 24
            finally:
                board.close()
                control.stop()
            service = MqttVerifierService(ToyVerifier(), broker.endpoint("verifier"),
                                          WorkerConfig("w-secret", group=broker.share_group)).start()
            board = Probe("probe-board", broker.endpoint(BOARD))
            try:
                board.subscribe(topics.feedback_topic(BOARD))
                assert _open_round(board, 3000) == 24
            finally:
                board.close()
                service.stop()
            for attacker in attackers:
                attacker.pump(0.05)
                assert not attacker.messages
            # the certificate is the identity: another device's username and password are ignored, not refused
            own = broker.endpoint(ATTACKERS[0])
            claim = Probe("probe-claim", dataclasses.replace(own, username=BOARD, password=broker.passwords[BOARD]))
            try:
                forged = encode(OpenSession(BOARD, 77, (1, 2), SamplingParams(), 64, TOY_VOCAB_HASH))
                assert claim.publish(topics.open_topic(BOARD), forged).value == NOT_AUTHORIZED
            finally:
                claim.close()
        finally:
            for attacker in attackers:
                attacker.close()
    finally:
        broker.stop()


def test_the_secret_group_is_per_deployment_and_private(secure_broker: DevBroker) -> None:
    group = secure_broker.share_group
    assert group.startswith(topics.DEFAULT_SHARE_GROUP + "-") and len(group) >= len(topics.DEFAULT_SHARE_GROUP) + 33
    assert set(group) <= set("abcdefghijklmnopqrstuvwxyz0123456789-")  # a valid topic level, no wildcard
    path = secure_broker.workdir / "share-group"
    assert path.read_text().strip() == group and (path.stat().st_mode & 0o777) == 0o600
    rules = [line for line in (secure_broker.workdir / "acl-devices").read_text().splitlines()
             if line and not line.startswith("#")]
    assert rules == ["pattern write qsv/v1/%u/draft", "pattern write qsv/v1/%u/draft/+",
                     "pattern read qsv/v1/%u/feedback", "pattern readwrite qsv/v1/%u/bench/#"]  # own topics only


# ------------------------------------------------------------------------------------------------ (b) plain listener
def test_no_plain_listener_without_opt_in(secure_broker: DevBroker, tmp_path: Path) -> None:
    conf = (secure_broker.workdir / "mosquitto.conf").read_text()
    assert conf.count("\nlistener ") == 2 and conf.count("require_certificate true") == 2
    assert secure_broker.plain_port == 0
    with pytest.raises(ValueError, match="no plain listener"):
        secure_broker.endpoint(BOARD, tls=False)
    dev = DevBroker(tmp_path / "dev", Fleet((BOARD,), ("verifier",)), insecure_dev=True).start()
    try:
        conf = (dev.workdir / "mosquitto.conf").read_text()
        assert conf.count("\nlistener ") == 3
        probe = Probe("probe-plain", dev.endpoint(BOARD, tls=False))  # passwords still required there
        probe.close()
        assert _refused(dataclasses.replace(dev.endpoint(BOARD, tls=False), password="wrong"))
    finally:
        dev.stop()


@pytest.mark.parametrize("tls", [True, False], ids=["tls", "no-tls"])
def test_the_demo_asks_for_the_plain_listener_only_with_no_tls(tmp_path: Path, tls: bool) -> None:
    from qsv_tools.demo.processes import DEVICE_ID, VERIFIER_USER, DemoStack

    stack = DemoStack([], tls=tls, workdir=tmp_path)
    try:
        stack.start_broker()
        assert stack.broker is not None and stack.broker.insecure_dev is not tls
        assert stack.port == (stack.broker.tls_port if tls else stack.broker.plain_port) > 0
        assert (stack.broker.plain_port == 0) is tls
        for name in (DEVICE_ID, VERIFIER_USER):
            endpoint = stack.endpoint(name)
            assert endpoint.tls is tls
            Probe(f"probe-{name}", endpoint).close()
    finally:
        stack.close()


# ------------------------------------------------------------------------------------- (c) certificate = username
def test_certificates_carry_the_username_as_cn(secure_broker: DevBroker) -> None:
    pki = secure_broker.workdir / "pki"
    for name, ca in [(BOARD, "ca.crt"), (ATTACKERS[0], "ca.crt"), ("verifier", "verifier-ca.crt")]:
        subject = subprocess.run(["openssl", "x509", "-in", str(pki / f"{name}.crt"), "-noout", "-subject",
                                  "-nameopt", "RFC2253"], capture_output=True, text=True, check=True).stdout
        assert subject.strip() == f"subject=CN={name}"
        verify = subprocess.run(["openssl", "verify", "-CAfile", str(pki / ca), str(pki / f"{name}.crt")],
                                capture_output=True, text=True)
        assert verify.returncode == 0, verify.stderr


def test_the_certificate_must_match_the_username_at_connect(secure_broker: DevBroker, tmp_path: Path) -> None:
    broker = secure_broker
    own = broker.endpoint(ATTACKERS[0])
    # the device's own certificate, username (= its CN) and password: connected (client id <username>:probe-own)
    probe = Probe("probe-own", own)
    try:
        assert probe.subscribe(topics.feedback_topic(ATTACKERS[0])).value == 1
        forged = encode(OpenSession(BOARD, 77, (1, 2), SamplingParams(), 64, TOY_VOCAB_HASH))
        assert probe.publish(topics.open_topic(BOARD), forged).value == NOT_AUTHORIZED  # publish ACL: the acl_file
        assert probe.publish(topics.worker_topic(BOARD, "w1"), forged).value == NOT_AUTHORIZED
        assert not probe.publish(topics.open_topic(ATTACKERS[0]), b"\x00").is_failure  # its own topic: yes
    finally:
        probe.close()
    log_path = broker.workdir / "mosquitto.log"
    log_start = log_path.stat().st_size
    # att-00's certificate with the board's username and the board's correct password: refused at CONNECT
    claims = {
        "another device's username + its password": dataclasses.replace(own, username=BOARD,
                                                                         password=broker.passwords[BOARD]),
        "another device's username, own password": dataclasses.replace(own, username=BOARD),
        "the verifier's username + its password": dataclasses.replace(own, username="verifier",
                                                                      password=broker.passwords["verifier"]),
        # the plugin deferred (CN = username), the password file refused: it runs after the plugin
        "own username, a wrong password": dataclasses.replace(own, password="wrong"),
        "own username, no password": dataclasses.replace(own, password=None),
        "no username": dataclasses.replace(own, username=None, password=None),
    }
    for why, endpoint in claims.items():
        assert _connack_refusal(endpoint) == "Not authorized", why  # CONNACK 0x87
    with open(log_path) as f:
        f.seek(log_start)
        log = f.read()
    assert f"qsv_auth: refused CONNECT of '{BOARD}' from 127.0.0.1: certificate CN '{ATTACKERS[0]}'" in log
    assert "New client connected" not in log
    # the board itself still connects and is served
    service = MqttVerifierService(ToyVerifier(), broker.endpoint("verifier"),
                                  WorkerConfig("w-claim", group=broker.share_group)).start()
    try:
        with RemoteVerifier(BOARD, broker.endpoint(BOARD), PATIENT) as remote:
            assert generate_remote(remote, PROMPT, 12, 3, 240, seed=4) == reference_generation(PROMPT, 12, 3, 240, 4)
    finally:
        service.stop()
    # no certificate, a certificate for the other listener, or of an unknown CA: refused in the handshake
    other = issue_cert(tmp_path, create_ca(tmp_path, "another CA"), BOARD)
    verifier = broker.endpoint("verifier")
    assert _refused(dataclasses.replace(own, cert_file=None, key_file=None))
    assert _refused(dataclasses.replace(own, port=broker.verifier_port))  # device cert, verifier listener
    assert _refused(dataclasses.replace(verifier, port=broker.tls_port))  # verifier cert, device listener
    assert _refused(dataclasses.replace(own, cert_file=other.cert, key_file=other.key))
    assert _refused(dataclasses.replace(own, cert_file=other.cert, key_file=other.key, username=BOARD,
                                        password=broker.passwords[BOARD]))  # CN = board, but of another CA


def test_the_devices_password_file_has_only_devices(secure_broker: DevBroker) -> None:
    passwd = secure_broker.workdir / "passwd-devices"
    names = [line.split(":", 1)[0] for line in passwd.read_text().splitlines()]
    assert names == [BOARD, *ATTACKERS] and (passwd.stat().st_mode & 0o777) == 0o600
    conf = (secure_broker.workdir / "mosquitto.conf").read_text()
    device_block = conf.split("\nlistener ")[1]
    assert f"password_file {passwd}" in device_block and f"plugin {secure_broker.auth_plugin}" in device_block
    assert "use_identity_as_username" not in device_block and "use_username_as_clientid" not in device_block
    assert "plugin_opt_topic_prefix qsv/v1/\nplugin_opt_read_topics feedback,bench/#" in device_block
    assert "\nplugin" not in conf.split("\nlistener ")[2]  # the verifiers' listener: certificate = identity


# ------------------------------------------------------------------------- (d) client ids bound to the username
def test_client_id_takeover_is_refused(secure_broker: DevBroker) -> None:
    """Another device's credentials with a stolen client id (the board's connection, the board's name, the worker's)
    are refused at CONNECT; the victims keep their connections and the board's session goes on."""
    broker = secure_broker
    service = MqttVerifierService(ToyVerifier(), broker.endpoint("verifier"),
                                  WorkerConfig("w-victim", group=broker.share_group)).start()
    log_path = broker.workdir / "mosquitto.log"
    log_start = log_path.stat().st_size
    victim = RemoteVerifier(BOARD, broker.endpoint(BOARD), PATIENT).connect()
    try:
        victim.open(PROMPT, SamplingParams(seed=9), 64, TOY_VOCAB_HASH)
        board_id = victim.client._client_id.decode()  # noqa: SLF001 - the id the victim connected with
        assert board_id.startswith(BOARD + ":edge-")
        stolen_ids = (board_id, BOARD, f"{BOARD}:bench-1", f"qsv-verifier-{service.config.worker_id}", "verifier",
                      f"{ATTACKERS[0]}-x", f"{ATTACKERS[0]}:", f"{ATTACKERS[0]}:a:b")
        for stolen in stolen_ids:
            with pytest.raises(ConnectionError, match="Not authorized"):
                Probe("-", broker.endpoint(ATTACKERS[0]), client_id=stolen)
        drafter = ToyDrafter()
        for seq in range(3):  # the victim's session goes on undisturbed, on the same connection
            tokens, blobs = drafter.draft(victim.history, 3, 240, 9)
            assert victim.verify(tokens, blobs, 240, TOY_CODEC_MODE).round_seq == seq
        assert victim.loop.connection_losses == 0 and victim.stats.resyncs == 0
        assert service.loop.connection_losses == 0 and service.client.is_connected()
        with open(log_path) as f:
            f.seek(log_start)
            log = f.read()
        assert "already connected, closing old connection" not in log
        for stolen in stolen_ids:
            assert f"client id '{stolen}' is neither the username" in log
    finally:
        victim.disconnect()
        service.stop()


def test_a_device_connects_its_runtime_and_its_bench_side_by_side(secure_broker: DevBroker) -> None:
    """Two connections of one device (``<device>:<role>`` ids) coexist: a bench echo runs while the runtime's session
    goes on, and neither is taken over."""
    broker = secure_broker
    service = MqttVerifierService(ToyVerifier(), broker.endpoint("verifier"),
                                  WorkerConfig("w-side", group=broker.share_group)).start()
    runtime = RemoteVerifier(BOARD, broker.endpoint(BOARD), PATIENT).connect()
    bench = Probe("bench-side", broker.endpoint(BOARD))
    try:
        runtime.open(PROMPT, SamplingParams(seed=4), 64, TOY_VOCAB_HASH)
        echo = f"{topics.TOPIC_PREFIX}/{BOARD}/bench/side"
        assert bench.subscribe(echo).value == 1
        drafter = ToyDrafter()
        for seq in range(3):
            assert not bench.publish(echo, b"ping %d" % seq).is_failure
            tokens, blobs = drafter.draft(runtime.history, 3, 240, 4)
            assert runtime.verify(tokens, blobs, 240, TOY_CODEC_MODE).round_seq == seq
        assert bench.loop.pump_until(lambda: len(bench.messages) >= 3, 5.0)
        assert runtime.loop.connection_losses == 0 and bench.client.is_connected() and not bench.disconnects
    finally:
        bench.close()
        runtime.disconnect()
        service.stop()


# ------------------------------------------------------------------------------------------ kill -9 of qsv broker
def _mosquittos_of(conf: Path) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if str(conf).encode() in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_kill_9_of_qsv_broker_orphans_no_mosquitto(tmp_path: Path) -> None:
    workdir = tmp_path / "broker"
    conf = workdir / "mosquitto.conf"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    orphans = 0
    for attempt in range(6):
        insecure = attempt == 5  # the last run opts in to the plain listener
        tls, verifier, plain = free_port(), free_port(), free_port()
        cmd = [sys.executable, "-m", "qsv", "broker", "--workdir", str(workdir), "--device-id", BOARD,
               "--tls-port", str(tls), "--verifier-port", str(verifier), "--plain-port", str(plain),
               "--log-level", "WARNING", *(["--insecure-dev"] if insecure else [])]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 30
            # mosquitto opens its listeners one after the other: wait for all that this run asks for
            while not (_listening(tls) and _listening(verifier) and (_listening(plain) or not insecure)):
                assert proc.poll() is None and time.monotonic() < deadline, "qsv broker did not come up"
                time.sleep(0.05)
            assert _listening(plain) == insecure  # without --insecure-dev: connection refused
            brokers = _mosquittos_of(conf)
            assert len(brokers) == 1
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        deadline = time.monotonic() + 5
        while _mosquittos_of(conf) and time.monotonic() < deadline:
            time.sleep(0.05)
        left = _mosquittos_of(conf)
        orphans += len(left)
        for pid in left:  # leave nothing behind even when the test fails
            os.kill(pid, signal.SIGKILL)
    assert orphans == 0
