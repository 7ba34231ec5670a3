"""``setup.sh`` finds FFCV's system libraries by what they provide (pkg-config, a compile-link-run probe
honouring CPATH, PKG_CONFIG_PATH and an active conda prefix), uses apt only on Debian with root or
sudo, and otherwise stops with one message naming what is missing for apt, dnf and conda-forge."""

import importlib.util
import os
import subprocess
from pathlib import Path
from typing import Dict

import pytest

from conftest import REPO

SETUP = REPO / "setup.sh"
HIDDEN = {"dpkg-query", "dpkg", "apt-get", "apt", "sudo"}


@pytest.fixture
def path_without_apt(tmp_path: Path) -> str:
    """A PATH with every command of this machine except Debian's package tools and sudo, as on a
    RHEL login node."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for folder in os.environ.get("PATH", "").split(os.pathsep) + ["/usr/sbin", "/sbin"]:
        if not os.path.isdir(folder):
            continue
        for name in os.listdir(folder):
            target = Path(folder) / name
            if name not in HIDDEN and not (bin_dir / name).exists() and os.access(target, os.X_OK):
                (bin_dir / name).symlink_to(target)
    return str(bin_dir)


def _setup(*args: str, env: Dict[str, str]) -> "subprocess.CompletedProcess[str]":
    return subprocess.run(
        ["bash", str(SETUP), *args], capture_output=True, text=True, timeout=120, env={**os.environ, **env}
    )


def _require_ffcv_libraries() -> None:
    if importlib.util.find_spec("ffcv") is None:  # found, not imported: that costs seconds
        pytest.skip("ffcv's libraries are installed by setup.sh")


def _shadow(folder: Path, header: str) -> Path:
    """A header that stops any compile including it: the library is 'not there' on that path."""
    (folder / header).parent.mkdir(parents=True, exist_ok=True)
    (folder / header).write_text(f'#error "{header} hidden by the test"\n')
    return folder


def test_check_finds_the_libraries_without_dpkg_or_apt(path_without_apt: str) -> None:
    _require_ffcv_libraries()
    result = _setup("--check", env={"PATH": path_without_apt})
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("found: ") == 7 and "missing" not in result.stdout
    assert "apt" not in result.stdout + result.stderr


def test_missing_libraries_stop_setup_before_pip_with_one_message(tmp_path: Path, path_without_apt: str) -> None:
    """libjpeg hidden on CPATH, TurboJPEG by a .pc file on PKG_CONFIG_PATH, OpenCV by the active
    conda prefix: setup names the three (and only them) for apt, dnf and conda-forge, and creates no
    environment."""
    _require_ffcv_libraries()
    cpath = _shadow(tmp_path / "cpath", "jpeglib.h")
    turbo = _shadow(tmp_path / "turbo", "turbojpeg.h")
    (tmp_path / "pc").mkdir()
    (tmp_path / "pc" / "libturbojpeg.pc").write_text(
        f"Name: libturbojpeg\nDescription: test\nVersion: 3\nCflags: -I{turbo}\nLibs: -lturbojpeg\n"
    )
    conda = tmp_path / "conda"
    _shadow(conda / "include" / "opencv4", "opencv2/core.hpp")
    env = {
        "PATH": path_without_apt,
        "CPATH": str(cpath),
        "PKG_CONFIG_PATH": str(tmp_path / "pc"),
        "CONDA_PREFIX": str(conda),
        "VENV": str(tmp_path / "venv"),
    }
    result = _setup(env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert not (tmp_path / "venv").exists()
    message = result.stderr
    assert message.startswith("setup.sh: not found: libjpeg-turbo's libjpeg API")
    assert "TurboJPEG API" in message and "OpenCV core + imgproc" in message
    assert "C compiler" not in message and "libGL" not in message
    assert "apt-get install libjpeg-dev libturbojpeg0-dev libopencv-core-dev libopencv-imgproc-dev\n" in message
    assert "dnf install libjpeg-turbo-devel turbojpeg-devel opencv-devel\n" in message
    assert "conda install -c conda-forge libjpeg-turbo opencv " in message
    assert "'bash setup.sh --no-ffcv'" in message


def test_probe_of_a_header_that_does_not_exist_fails() -> None:
    """The probe the requirements use: a program that includes a missing header does not count."""

    def probe(header: str) -> int:
        source = f"#include <{header}>\nint main(void) {{ return 0; }}"
        return subprocess.run(["bash", "-c", f'source "{SETUP}" && probe c "" "$0"', source]).returncode

    assert probe("stdio.h") == 0
    assert probe("shufflenet_pl_no_such_header.h") == 1


def test_apt_only_on_debian_with_root_or_sudo(path_without_apt: str) -> None:
    where = subprocess.run(
        ["bash", "-c", f'source "{SETUP}" && apt_prefix'],
        capture_output=True,
        env={**os.environ, "PATH": path_without_apt},
    )
    assert where.returncode == 1


def test_torch_cuda_picks_pytorch_s_index_for_the_pinned_version(tmp_path: Path) -> None:
    chosen = _setup("--no-ffcv", "--check", "--torch-cuda", "12.8", env={})
    assert chosen.returncode == 0, chosen.stderr
    assert (
        "pip install torch==2.14.1+cu128 torchvision==0.29.1+cu128 --index-url https://download.pytorch.org/whl/cu128"
        in (chosen.stdout)
    )
    default = _setup("--no-ffcv", "--check", env={})
    assert "pip install torch==2.14.1 torchvision==0.29.1\n" in default.stdout
    refused = _setup("--no-ffcv", "--check", "--torch-cuda", "11.8", env={})
    assert refused.returncode == 2
    assert refused.stderr.strip() == (
        "setup.sh: --torch-cuda 11.8: use 12.6, 12.8, 13.0 or cpu (nvidia-smi shows the driver's CUDA version)"
    )


def test_library_path_folders_come_before_the_system_s_and_are_recorded() -> None:
    """GCC searches LIBRARY_PATH after its own folders: setup puts each folder ahead, in order, with an
    rpath, before the user's own LDFLAGS."""
    flags = subprocess.run(
        ["bash", "-c", f'source "{SETUP}" && library_ldflags'],
        capture_output=True,
        text=True,
        env={**os.environ, "LIBRARY_PATH": "/opt/a::/opt/b", "LDFLAGS": "-Wl,-O1"},
    )
    assert flags.stdout == "-L/opt/a -Wl,-rpath,/opt/a -L/opt/b -Wl,-rpath,/opt/b -Wl,-O1"


def test_environment_yml_has_every_conda_forge_package_setup_names_for_ffcv() -> None:
    """What setup's message tells a conda user to install is what ``environment.yml`` installs (libGL
    and GLib for the opencv-python wheel included)."""
    import yaml

    named = subprocess.run(
        ["bash", "-c", f'source "{SETUP}" && for id in "${{FFCV_REQUIREMENTS[@]}}"; do echo ${{CONDA[$id]}}; done'],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    environment = yaml.safe_load((REPO / "environment.yml").read_text())
    assert "libgl" in named and set(named) <= set(environment["dependencies"]), named
