"""Why a GPU job's torch cannot use the GPUs, in one line: the NVIDIA driver's CUDA version against
the CUDA version torch was built for, and which ``setup.sh --torch-cuda`` build fits the driver.

A driver runs CUDA builds of its own major version and older (NVIDIA's minor version compatibility:
CUDA 12.x needs driver >= 525, CUDA 13.x >= 580), so a torch built for CUDA 13 sees no GPU under a
12.x driver. :func:`gpu_problem` is a pure function of the versions; :func:`usable_gpu_problem`
reads them on this node; :func:`accelerator_problem` asks it for a ``trainer.accelerator`` that
wants a CUDA GPU (a direct ``shufflenet-pl fit``).
"""

import ctypes
import os
import re
import shutil
import socket
import subprocess
from typing import Optional, Tuple

__all__ = ["TORCH_CUDA_BUILDS", "accelerator_problem", "driver_cuda_version", "gpu_problem", "usable_gpu_problem"]

#: The CUDA builds of torch that ``bash setup.sh --torch-cuda`` installs, newest first.
TORCH_CUDA_BUILDS = ("13.0", "12.8", "12.6")
#: How a launcher's job runs without a GPU.
CPU_JOB = "run a CPU job (--cpu)"

Version = Tuple[int, int]


def _parse(text: Optional[str]) -> Optional[Version]:
    match = re.match(r"\s*(\d+)\.(\d+)", text or "")
    return (int(match.group(1)), int(match.group(2))) if match else None


def driver_cuda_version() -> Optional[Version]:
    """The newest CUDA version the installed driver supports (libcuda's ``cuDriverGetVersion``, which
    needs no GPU, else ``nvidia-smi``'s header); ``None`` without an NVIDIA driver."""
    try:
        version = ctypes.c_int()
        if ctypes.CDLL("libcuda.so.1").cuDriverGetVersion(ctypes.byref(version)) == 0 and version.value > 0:
            return version.value // 1000, version.value % 1000 // 10
    except (OSError, AttributeError):
        pass
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        output = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"CUDA Version:\s*(\d+\.\d+)", output)
    return _parse(match.group(1)) if match else None


def _build_for(driver: Version) -> Optional[str]:
    """The newest ``--torch-cuda`` build this driver runs: the newest not above its version, else the
    oldest of its major version (NVIDIA's minor version compatibility runs it)."""
    builds = [(_parse(build), build) for build in TORCH_CUDA_BUILDS]
    not_newer = [build for version, build in builds if version is not None and version <= driver]
    same_major = [build for version, build in builds if version is not None and version[0] == driver[0]]
    return not_newer[0] if not_newer else (same_major[-1] if same_major else None)


def gpu_problem(
    driver: Optional[Version],
    torch_cuda: Optional[str],
    torch_version: str,
    visible_devices: Optional[str] = None,
    host: str = "this node",
    cpu_run: str = CPU_JOB,
) -> str:
    """The one-line reason why torch sees no GPU in a GPU job, and the fix.

    Args:
        driver: the driver's CUDA version (:func:`driver_cuda_version`), ``None`` without a driver.
        torch_cuda: ``torch.version.cuda`` (``None`` for a CPU-only build).
        torch_version: ``torch.__version__``.
        visible_devices: ``CUDA_VISIBLE_DEVICES`` (``None`` when unset).
        host: the node's name, for the message.
        cpu_run: how to run without a GPU instead, for the message.
    """
    if visible_devices is not None and visible_devices.strip() in ("", "-1", "none", "NoDevFiles"):
        return (
            f"{host}: CUDA_VISIBLE_DEVICES={visible_devices!r} hides every GPU from this GPU job; "
            f"unset it, or {cpu_run}"
        )
    driver_text = f"{driver[0]}.{driver[1]}" if driver else None
    fix = _build_for(driver) if driver else None
    reinstall = (
        f"bash setup.sh --torch-cuda {fix}"
        if fix
        else "upgrade the NVIDIA driver to >= 525 (CUDA 12) or >= 580 (CUDA 13)"
    )
    if torch_cuda is None:
        if driver is None:
            return (
                f"{host}: no NVIDIA driver here (libcuda.so.1 does not load) and torch {torch_version} is a "
                f"CPU-only build; run GPU jobs on GPU nodes, or {cpu_run}"
            )
        return (
            f"{host}: torch {torch_version} is a CPU-only build, but the NVIDIA driver supports CUDA "
            f"{driver_text}; {reinstall}"
        )
    if driver is None:
        return (
            f"{host}: no NVIDIA driver here (libcuda.so.1 does not load, no nvidia-smi); torch {torch_version} "
            f"is built for CUDA {torch_cuda}; run GPU jobs on GPU nodes, or {cpu_run}"
        )
    built = _parse(torch_cuda)
    if built is not None and driver[0] < built[0]:
        return (
            f"{host}: the NVIDIA driver supports CUDA {driver_text}, older than CUDA {torch_cuda} that torch "
            f"{torch_version} is built for (nvidia-smi shows the driver's version); {reinstall}"
        )
    return (
        f"{host}: torch {torch_version} (CUDA {torch_cuda}) sees no GPU although the NVIDIA driver supports "
        f"CUDA {driver_text}; check that the job was given GPUs (nvidia-smi in the job)"
    )


def usable_gpu_problem(cpu_run: str = CPU_JOB) -> Optional[str]:
    """``None`` when torch can use a GPU here, else :func:`gpu_problem` for this node."""
    import torch

    if torch.cuda.is_available():
        return None
    return gpu_problem(
        driver_cuda_version(),
        torch.version.cuda,
        torch.__version__,
        os.environ.get("CUDA_VISIBLE_DEVICES"),
        os.environ.get("SLURMD_NODENAME") or socket.gethostname(),
        cpu_run,
    )


def accelerator_problem(accelerator: object) -> Optional[str]:
    """``None`` unless ``trainer.accelerator`` asks for a CUDA GPU that torch cannot use here; then the
    one-line reason, which names the setting, for a run started without the launcher."""
    name = str(accelerator).lower() if isinstance(accelerator, str) else None
    if name not in ("gpu", "cuda"):
        return None
    import torch

    if name == "gpu" and torch.backends.mps.is_available():  # Lightning's "gpu" is Apple's GPU there
        return None
    problem = usable_gpu_problem(cpu_run="run on the CPU (--trainer.accelerator cpu)")
    return None if problem is None else f"trainer.accelerator={accelerator}: {problem}"
