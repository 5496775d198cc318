"""Development PKI with the openssl CLI: a CA, a broker server certificate and per-device / per-verifier client
certificates (EC P-256). For development fleets and tests; production fleets use their own CA."""

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


def create_ca(out_dir: Path, common_name: str = "QSV dev CA", days: int = 825) -> CertFiles:
    """Self-signed CA (ca.crt, ca.key) in out_dir; reused when both files exist."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = CertFiles(out_dir / "ca.crt", out_dir / "ca.key")
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
