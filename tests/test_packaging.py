"""The package as a user installs it: a wheel built from this tree, installed outside the checkout, validates a board
config with the schema it ships (package data, no checkout path), and `qsv edge --help` runs without torch."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, installed (without dependencies: this venv has them) into a folder of its own."""
    work = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(work / "dist"), str(ROOT)], check=True, timeout=600)
    (wheel,) = (work / "dist").glob("qsv-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "firmware_configs/schema.json" in names and "firmware_configs/raspberry-pi-4.yaml" in names
    assert any(n.startswith("qsv_wire/_qsv_core") for n in names)  # the C core is built into the wheel
    assert "qsv_tools/broker/qsv_auth_plugin.c" in names  # `qsv broker` builds its auth plugin from the package
    assert not any(n.startswith("tests/") for n in names)  # test doubles stay out of the product
    site = work / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, timeout=600)
    return site


def _run(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(site))
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_an_installed_wheel_validates_a_board_config_with_its_packaged_schema(installed: Path, tmp_path: Path) -> None:
    where = _run(installed, tmp_path, "-c", "import edge_runtime.config as c, firmware_configs as f; "
                                            "print(c.__file__); print(f.__file__); print(c.SCHEMA_PATH)")
    assert where.returncode == 0, where.stderr
    assert all(line.startswith(str(installed)) for line in where.stdout.split()), where.stdout  # not the checkout
    good = tmp_path / "board.yaml"
    good.write_text((ROOT / "firmware_configs" / "raspberry-pi-5.yaml").read_text())
    bad = tmp_path / "bad.yaml"
    bad.write_text("schema_version: 1\ncontroller:\n  mode: fastest\n")
    ok = _run(installed, tmp_path, "-m", "qsv", "config", str(good))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    refused = _run(installed, tmp_path, "-m", "qsv", "config", str(bad))
    assert refused.returncode != 0 and "bad.yaml:3" in refused.stdout + refused.stderr


def test_qsv_edge_help_from_the_wheel_imports_no_torch(installed: Path, tmp_path: Path) -> None:
    probe = ("import sys, runpy\n"
             "sys.argv = ['qsv', 'edge', '--help']\n"
             "try:\n    runpy.run_module('qsv', run_name='__main__')\nexcept SystemExit as exc:\n"
             "    assert exc.code == 0, exc.code\n"
             "assert 'torch' not in sys.modules, 'torch imported'\nprint('no torch')\n")
    out = _run(installed, tmp_path, "-c", probe)
    assert out.returncode == 0 and "no torch" in out.stdout and "--config" in out.stdout, out.stderr


ROLES = {  # role: (its top-level packages, a command it has, commands of the other roles)
    "edge": ({"qsv_wire", "edge_runtime", "firmware_configs", "qsv"}, "edge", ("demo", "verifier", "broker")),
    "cloud": ({"qsv_wire", "cloud_verifier", "qsv_models", "qsv"}, "verifier", ("edge", "demo", "flash")),
}


@pytest.fixture(scope="module", params=sorted(ROLES))
def role_wheel(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
               ) -> tuple[str, list[str], Path]:
    """One role's package (QSV_ROLE=edge / cloud): the role, its file names, the wheel installed in a folder."""
    role = request.param
    work = tmp_path_factory.mktemp(f"{role}-wheel")
    env = dict(os.environ, QSV_ROLE=role)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(work / "dist"), str(ROOT)], check=True, timeout=600, env=env)
    (wheel,) = (work / "dist").glob("qsv-*.whl")
    site = work / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, timeout=600)
    return role, zipfile.ZipFile(wheel).namelist(), site


def test_a_role_package_holds_that_role_and_the_wire_format_only(role_wheel: tuple[str, list[str], Path],
                                                                 tmp_path: Path) -> None:
    role, names, site = role_wheel
    packages, own, others = ROLES[role]
    tops = {n.split("/", 1)[0] for n in names if "/" in n and ".dist-info" not in n}
    assert tops == packages, tops
    assert any(n.startswith("qsv_wire/_qsv_core") for n in names)

    def qsv(*args: str) -> subprocess.CompletedProcess:  # this venv's editable install of the checkout left out
        probe = ("import runpy, sys\n"
                 "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in getattr(f, '__module__', '')]\n"
                 f"sys.argv = ['qsv', *{list(args)!r}]\n"
                 "runpy.run_module('qsv', run_name='__main__')\n")
        return _run(site, tmp_path, "-c", probe)

    mine = qsv(own, "--help")
    assert mine.returncode == 0 and "usage: qsv " + own in mine.stdout, mine.stderr
    for command in others:  # other roles' commands: a one-line answer, no traceback
        other = qsv(command, "--help")
        assert other.returncode == 2 and "not part of this installation" in other.stderr, other.stderr
        assert "Traceback" not in other.stderr
    version = qsv("--version")
    assert version.returncode == 0 and version.stdout.startswith("qsv "), version.stderr


def test_an_unknown_role_is_refused_before_building(tmp_path: Path) -> None:
    env = dict(os.environ, QSV_ROLE="fridge")
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                          str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode != 0 and "QSV_ROLE='fridge'" in out.stdout + out.stderr
