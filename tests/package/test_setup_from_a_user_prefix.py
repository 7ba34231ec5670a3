"""``setup.sh`` for a user without root, whose FFCV libraries come from a prefix of their own (a site
module, ``dpkg -x``, a build), on a machine without Debian's package tools: it finds them there, builds
against them, and the demo trains for an epoch with nothing but the environment it made.

The test runs as root: it downloads Debian's libjpeg-turbo and OpenCV packages and unpacks them with
``dpkg -x`` into a prefix, creates a user, and runs every step as that user in a mount namespace of its
own, in which each file the system's copies of those packages installed is covered by a stand-in that
stops any use (a header that is an ``#error``, a library that is a linker script naming a library that
does not exist, a ``.pc`` file that requires a package that does not exist). Inside it the libraries are
present only in the prefix, and the test checks that: ``setup.sh --check`` without the prefix reports
them missing, with it found.
"""

import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import pytest

from conftest import REPO

#: Debian's packages of what FFCV builds against (the -dev packages and their libraries).
PACKAGES = (
    "libjpeg62-turbo-dev",
    "libjpeg62-turbo",
    "libturbojpeg0-dev",
    "libturbojpeg0",
    "libopencv-core-dev",
    "libopencv-core406",
    "libopencv-imgproc-dev",
    "libopencv-imgproc406",
)
MULTIARCH = "x86_64-linux-gnu"
HIDDEN_COMMANDS = {"dpkg-query", "dpkg", "apt-get", "apt", "sudo"}
SYSTEM_BIN = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
USER = "shufflenet-pl-user"

Run = "subprocess.CompletedProcess[str]"


def _skip_unless_root_with_namespaces() -> None:
    if os.geteuid() != 0:
        pytest.skip("creates a user and a mount namespace: needs root")
    for tool in ("useradd", "userdel", "unshare", "setpriv", "apt-get", "dpkg", "dpkg-query"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool} (a Debian machine)")
    if subprocess.run(["unshare", "--mount", "true"], capture_output=True).returncode != 0:
        pytest.skip("mount namespaces are not allowed here (unshare --mount fails)")


def _download_packages(folder: Path) -> List[Path]:
    folder.mkdir()
    command = ["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", *PACKAGES]
    for attempt in range(2):
        result = subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=300)
        if result.returncode == 0:
            return sorted(folder.glob("*.deb"))
        if attempt == 0:  # apt's lists may not be there yet on a fresh machine
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True, timeout=300)
    pytest.skip(f"cannot download Debian's packages here: {result.stderr.strip().splitlines()[-1:]}")


def _make_prefix(debs: List[Path], prefix: Path) -> Dict[str, str]:
    """Unpack the packages into ``prefix`` and point their ``.pc`` files at it, as a module's are; returns
    the variables a module would set for it."""
    for deb in debs:
        subprocess.run(["dpkg", "-x", str(deb), str(prefix)], check=True)
    usr = prefix / "usr"
    for pc in (usr / "lib" / MULTIARCH / "pkgconfig").glob("*.pc"):
        pc.write_text(re.sub(r"^(\w+)=/usr", rf"\1={usr}", pc.read_text(), flags=re.M))
    libraries = str(usr / "lib" / MULTIARCH)
    return {
        "PKG_CONFIG_PATH": f"{libraries}/pkgconfig",
        "CPATH": f"{usr / 'include'}:{usr / 'include' / MULTIARCH}",
        "LIBRARY_PATH": libraries,
        "LD_LIBRARY_PATH": libraries,
    }


def _stand_ins(folder: Path) -> Path:
    """For every file the system's copies of :data:`PACKAGES` installed, a stand-in that stops its use;
    returns a list of ``stand-in<TAB>file`` lines for the namespace's bind mounts."""
    folder.mkdir()
    header = folder / "header.h"
    header.write_text('#error "hidden: only the user\'s prefix provides this"\n')
    library = folder / "library.so"
    library.write_text("INPUT(-lshufflenet_pl_hidden_by_the_test)\n")  # ld reads it as a linker script
    pc = folder / "hidden.pc"
    pc.write_text("Name: hidden\nDescription: hidden\nVersion: 0\nRequires: shufflenet-pl-hidden-by-the-test\n")
    empty = folder / "empty"
    empty.write_text("")
    lines = []
    for package in PACKAGES:
        listed = subprocess.run(["dpkg-query", "-L", package], capture_output=True, text=True)
        files = {os.path.realpath(path) for path in listed.stdout.split("\n") if os.path.isfile(path)}
        for path in sorted(files):
            if path.startswith("/usr/share/"):
                continue
            name = os.path.basename(path)
            if name.endswith((".h", ".hpp")):
                stand_in = header
            elif name.endswith(".pc"):
                stand_in = pc
            elif ".so" in name or name.endswith(".a"):
                stand_in = library
            else:
                stand_in = empty
            lines.append(f"{stand_in}\t{path}\n")
    for path in folder.iterdir():
        path.chmod(0o644)
    mounts = folder / "mounts.tsv"
    mounts.write_text("".join(lines))
    return mounts


def _user_path(bin_dir: Path) -> str:
    """This machine's commands less Debian's package tools and sudo, as on a RHEL login node."""
    bin_dir.mkdir()
    for folder in SYSTEM_BIN:
        if not os.path.isdir(folder):
            continue
        for name in os.listdir(folder):
            target = Path(folder) / name
            if name not in HIDDEN_COMMANDS and not (bin_dir / name).exists() and os.access(target, os.X_OK):
                (bin_dir / name).symlink_to(target)
    return str(bin_dir)


def _pip_settings() -> Dict[str, str]:
    """pip's settings of this machine's root (its index and wheel folders) as variables for the user,
    whose own pip configuration is empty; the system-wide ones apply to both."""
    settings = {key: value for key, value in os.environ.items() if key.startswith("PIP_")}
    listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True)
    for line in listed.stdout.splitlines():
        match = re.match(r"(?:global|install)\.([\w-]+)='(.*)'$", line)
        if match:
            settings.setdefault("PIP_" + match.group(1).upper().replace("-", "_"), match.group(2))
    return settings


@pytest.fixture
def user_home() -> Iterator[Tuple[Path, Path]]:
    """A new user's home (world-traversable, under /var/tmp) and a folder beside it for root's files."""
    _skip_unless_root_with_namespaces()
    base = Path(tempfile.mkdtemp(prefix="shufflenet-pl-user-", dir="/var/tmp"))
    base.chmod(0o755)
    home = base / "home"
    subprocess.run(["userdel", USER], capture_output=True)
    subprocess.run(["useradd", "--home-dir", str(home), "--shell", "/bin/bash", USER], check=True)
    home.mkdir()
    shutil.chown(home, USER, USER)
    try:
        yield home, base
    finally:
        subprocess.run(["userdel", USER], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def _copy_repository(target: Path) -> None:
    """The project's files (tracked and new, none that git ignores), owned by the user."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    for name in filter(None, listed.stdout.split("\0")):
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    subprocess.run(["chown", "-R", f"{USER}:{USER}", str(target)], check=True)


def _as_user(command: str, cwd: Path, env: Dict[str, str], mounts: Path, timeout: int) -> Run:
    """``command`` (bash) as the user, with nothing but ``env``, where the system's copies are hidden."""
    account = pwd.getpwnam(USER)
    variables = [f"{key}={value}" for key, value in env.items()]
    namespace = (
        'while IFS=$\'\\t\' read -r stand_in file; do mount --bind "$stand_in" "$file"; done < "$1"; '
        'exec setpriv --reuid "$2" --regid "$3" --init-groups -- env -i "${@:4}"'
    )
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "--", "bash", "-c", namespace, "namespace"]
        + [str(mounts), str(account.pw_uid), str(account.pw_gid), *variables]
        + ["bash", "-c", f"cd {cwd} && {command}"],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _output(result: Run) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout[-6000:]}\n--- stderr\n{result.stderr[-6000:]}"


@pytest.mark.slow
def test_a_user_sets_up_from_a_prefix_of_their_own_and_trains_the_demo(user_home: Tuple[Path, Path]) -> None:
    home, base = user_home
    started = time.monotonic()
    prefix_env = _make_prefix(_download_packages(base / "debs"), base / "prefix")
    mounts = _stand_ins(base / "hidden")
    repo = home / "shufflenet-pl"
    _copy_repository(repo)
    account = {
        "HOME": str(home),
        "USER": USER,
        "LOGNAME": USER,
        "LANG": "C.UTF-8",
        "PATH": _user_path(base / "bin"),
        **_pip_settings(),
    }
    timings = {"prepare": time.monotonic() - started}

    # Without the prefix the libraries are not there: the system's copies are hidden from every probe.
    bare = _as_user("bash setup.sh --check", repo, account, mounts, timeout=120)
    assert bare.returncode == 1, _output(bare)
    missing = [line.split("missing: ", 1)[1] for line in bare.stdout.splitlines() if "missing: " in line]
    assert [what.split(" (")[0] for what in missing] == [
        "libjpeg-turbo's libjpeg API",
        "libjpeg-turbo's TurboJPEG API",
        "OpenCV core + imgproc",
    ], _output(bare)

    with_prefix = {**account, **prefix_env}
    check = _as_user("bash setup.sh --check", repo, with_prefix, mounts, timeout=120)
    assert check.returncode == 0, _output(check)
    assert check.stdout.count("found: ") == 7, _output(check)

    started = time.monotonic()
    setup = _as_user("bash setup.sh", repo, with_prefix, mounts, timeout=1800)
    timings["setup"] = time.monotonic() - started
    assert setup.returncode == 0, _output(setup)
    assert "apt-get install" not in setup.stdout, _output(setup)

    # Training needs none of the module's variables: what was built against the prefix records it.
    started = time.monotonic()
    fit = _as_user(
        ".venv/bin/shufflenet-pl fit --config configs/experiment/demo.yaml --trainer.max_epochs 1 --no-wandb",
        repo,
        account,
        mounts,
        timeout=900,
    )
    timings["fit"] = time.monotonic() - started
    assert fit.returncode == 0, _output(fit)
    metrics = list((repo / "runs" / "demo").glob("**/metrics.csv"))
    assert len(metrics) == 1 and "val/acc1" in metrics[0].read_text(), _output(fit)
    assert list((repo / "runs" / "demo").glob("**/last.ckpt")), _output(fit)

    loaded = _as_user(
        ".venv/bin/python -c 'import ffcv.libffcv; from shufflenet_pl.data import jpeg_box; jpeg_box.load(); "
        'print(open("/proc/self/maps").read())\'',
        repo,
        account,
        mounts,
        timeout=300,
    )
    assert loaded.returncode == 0, _output(loaded)
    # Wheels bring copies of their own (Pillow's libjpeg, OpenCV's in cv2): those outside them count.
    libraries = {
        line.split()[-1]
        for line in loaded.stdout.splitlines()
        if re.search(r"/lib(jpeg|turbojpeg|opencv_)[^/]*$", line) and "/site-packages/" not in line
    }
    names = {os.path.basename(path).split(".so")[0] for path in libraries}
    assert names == {"libjpeg", "libturbojpeg", "libopencv_core", "libopencv_imgproc"}, libraries
    assert all(path.startswith(str(base / "prefix")) for path in libraries), libraries
    print("timings (s): " + ", ".join(f"{step} {seconds:.0f}" for step, seconds in timings.items()))
