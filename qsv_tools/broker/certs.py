"""Development PKI with the openssl CLI (EC P-256): a CA that signs the broker's server certificate and the devices'
client certificates, and a second CA that signs only the verifiers' client certificates (the broker's verifier
listener trusts that one alone, so no device certificate can log in there). A client certificate's CN is the
client's fleet name = its MQTT username: the verifiers' listener takes it as the username
(``use_identity_as_username``), the devices' listener refuses a device whose username is not its CN (auth plugin).
For development fleets and tests; production fleets use their own two CAs."""

from __future__ import annotations

import logging
import os
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

CURVE = "prime256v1"


@dataclass(frozen=True)
class CertFiles:
    cert: Path
    key: Path


class PkiError(RuntimeError):
    """openssl failed."""


def _openssl(*args: str) -> None:
    proc = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise PkiError(f"openssl {' '.join(args[:2])} failed: {proc.stderr.strip()}")


def _private(path: Path) -> None:
    os.chmod(path, 0o600)


def create_ca(out_dir: Path, common_name: str = "QSV dev CA", days: int = 825, *, stem: str = "ca") -> CertFiles:
    """Self-signed CA (<stem>.crt, <stem>.key) in out_dir; reused when both files exist."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = CertFiles(out_dir / f"{stem}.crt", out_dir / f"{stem}.key")
    if files.cert.exists() and files.key.exists():
        return files
    _openssl(
        "req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", f"ec_paramgen_curve:{CURVE}", "-nodes",
        "-keyout", str(files.key), "-out", str(files.cert), "-days", str(days), "-subj", f"/CN={common_name}",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )
    _private(files.key)
    log.info("created CA %s", files.cert)
    return files


def issue_cert(
    out_dir: Path, ca: CertFiles, common_name: str, *, server: bool = False,
    hosts: Iterable[str] = ("localhost", "127.0.0.1"), days: int = 825,
) -> CertFiles:
    """Key + certificate signed by ``ca``: <name>.crt / <name>.key. Server certificates carry the hosts as SANs."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = CertFiles(out_dir / f"{common_name}.crt", out_dir / f"{common_name}.key")
    csr = out_dir / f"{common_name}.csr"
    _openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", f"ec_paramgen_curve:{CURVE}", "-nodes",
        "-keyout", str(files.key), "-out", str(csr), "-subj", f"/CN={common_name}",
    )
    _private(files.key)
    lines = ["basicConstraints=CA:FALSE", f"extendedKeyUsage={'serverAuth' if server else 'clientAuth'}"]
    if server:
        sans = [f"IP:{h}" if h.replace(".", "").isdigit() or ":" in h else f"DNS:{h}" for h in hosts]
        lines.append("subjectAltName=" + ",".join(sans))
    with tempfile.NamedTemporaryFile("w", suffix=".cnf", delete=False) as ext:
        ext.write("\n".join(lines) + "\n")
    try:
        _openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(ca.cert), "-CAkey", str(ca.key), "-CAcreateserial",
            "-out", str(files.cert), "-days", str(days), "-extfile", ext.name,
        )
    finally:
        os.unlink(ext.name)
        csr.unlink(missing_ok=True)
    return files


@dataclass(frozen=True)
class FleetPki:
    ca: CertFiles  # signs the server certificate and the device certificates; clients verify the broker with it
    verifier_ca: CertFiles  # signs the verifier certificates only
    server: CertFiles


def create_fleet_pki(out_dir: Path, devices: Iterable[str], verifiers: Iterable[str],
                     hosts: Iterable[str] = ("localhost", "127.0.0.1")) -> FleetPki:
    """Both CAs (reused when present), the broker's server certificate and one client certificate per fleet member,
    CN = its name = its MQTT username: <name>.crt / <name>.key."""
    ca = create_ca(out_dir)
    verifier_ca = create_ca(out_dir, "QSV dev verifier CA", stem="verifier-ca")
    server = issue_cert(out_dir, ca, "broker", server=True, hosts=tuple(hosts))
    for name in devices:
        issue_cert(out_dir, ca, name)
    for name in verifiers:
        issue_cert(out_dir, verifier_ca, name)
    return FleetPki(ca, verifier_ca, server)
