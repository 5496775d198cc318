"""The mosquitto auth plugin of the devices' listener (qsv_auth_plugin.c beside this module): build it into the broker's
workdir, or find a prebuilt one.

The plugin refuses a device's SUBSCRIBE to anything but its own readable topics (SUBACK 0x87: no ``$share/…``, no
``$`` topic, no wildcard, no other device's topic; mosquitto 2.0's acl_file never checks SUBSCRIBE) and, at CONNECT,
a username that is not the CN of the client certificate (then the password file decides). See the C file for the
design. Without a C compiler or the headers (Debian: mosquitto-dev, libmosquitto-dev, libssl-dev) the broker still
runs, in the older certificate-as-identity mode (``DevBroker`` logs a WARNING that says what is missing)."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

SOURCE = Path(__file__).resolve().with_name("qsv_auth_plugin.c")  # package data: also in an installed wheel
PREBUILT_ENV = "QSV_AUTH_PLUGIN"  # path of a prebuilt qsv_auth_plugin.so (an installed package has no csrc/)
PLUGIN_NAME = "qsv_auth_plugin.so"
# the same flags as qsv_tools/broker/Makefile
CFLAGS = ("-std=c11", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O2", "-fPIC", "-shared")
LIBS = ("-lcrypto",)
# header (as the compiler names it when missing) -> the Debian package that has it
HEADER_PACKAGES = {"mosquitto_broker.h": "mosquitto-dev", "mosquitto_plugin.h": "mosquitto-dev",
                   "mosquitto.h": "libmosquitto-dev", "openssl/": "libssl-dev"}
DEV_PACKAGES = "mosquitto-dev libmosquitto-dev libssl-dev"


@dataclass(frozen=True)
class PluginBuild:
    """``path``: the plugin to load, or None; then ``missing`` says what was missing."""

    path: Path | None
    missing: str = ""


def _compiler() -> str | None:
    cc = os.environ.get("CC")
    if cc:
        return shutil.which(cc)
    return shutil.which("cc") or shutil.which("gcc")


def _missing_from(stderr: str) -> str:
    """What a failed compile lacked: a header (and its Debian package), the crypto library, or the error."""
    headers = re.findall(r"fatal error: ([\w./-]+\.h): No such file", stderr)
    if headers:
        package = next((pkg for prefix, pkg in HEADER_PACKAGES.items() if headers[0].startswith(prefix)), "?")
        return f"the header {headers[0]} (Debian package {package})"
    if "cannot find -lcrypto" in stderr:
        return "libcrypto for linking (Debian package libssl-dev)"
    return f"a successful compile: {stderr.strip()[-400:]}"


def build_auth_plugin(workdir: Path, source: Path = SOURCE) -> PluginBuild:
    """``workdir/qsv_auth_plugin.so``, compiled with ``cc`` from PATH (or ``$CC``) unless it is up to date; or
    ``$QSV_AUTH_PLUGIN`` when set. Never raises for a missing tool: the result says what was missing."""
    prebuilt = os.environ.get(PREBUILT_ENV)
    if prebuilt:
        path = Path(prebuilt).resolve()
        if path.is_file():
            log.info("mosquitto auth plugin: using the prebuilt %s ($%s)", path, PREBUILT_ENV)
            return PluginBuild(path)
        return PluginBuild(None, f"the prebuilt plugin ${PREBUILT_ENV}={prebuilt} (no such file)")
    if not source.is_file():
        return PluginBuild(None, f"the plugin source {source} (an incomplete installation: reinstall qsv, or "
                                 f"set ${PREBUILT_ENV} to a prebuilt plugin)")
    cc = _compiler()
    if cc is None:
        wanted = os.environ.get("CC") or "cc"
        return PluginBuild(None, f"a C compiler ({wanted} not found on PATH)")
    out = Path(workdir) / PLUGIN_NAME
    stamp = out.with_suffix(".so.sha256")
    key = hashlib.sha256(source.read_bytes() + "\0".join((cc, *CFLAGS, *LIBS)).encode()).hexdigest()
    if out.is_file() and stamp.is_file() and stamp.read_text().strip() == key:
        log.info("mosquitto auth plugin: %s is up to date", out)
        return PluginBuild(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".qsv_auth_plugin-", suffix=".so", dir=out.parent)
    os.close(fd)
    try:
        proc = subprocess.run([cc, *CFLAGS, str(source), "-o", tmp, *LIBS], capture_output=True, text=True,
                              check=False)
        if proc.returncode != 0:
            return PluginBuild(None, _missing_from(proc.stderr))
        os.chmod(tmp, 0o755)
        os.replace(tmp, out)  # atomic: a running broker keeps the file it has mapped
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    stamp.write_text(key + "\n")
    log.info("mosquitto auth plugin built: %s (%s %s)", out, cc, source)
    return PluginBuild(out)
