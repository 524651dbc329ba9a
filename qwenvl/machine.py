"""What this machine offers a run, and whether the run can use it: asked before any model loads.

A machine whose NVIDIA GPUs torch cannot use (a driver older than the CUDA the torch wheel was built for, a
CPU-only torch build, a container without the devices) would otherwise train a 4B model on the CPU, for days,
with "CPU only" in a banner. The launchers (``scripts/_torchrun.sh``), ``scripts/gpu_check.sh`` and evaluation
stop instead, naming the cause and the fix; ``ALLOW_CPU=1`` runs on the CPU all the same. A GPU run is also
stopped when it asks for more processes than there are GPUs, or for bf16 (the guide's precision, and the
launchers' default where the GPU has it) on a GPU without it.

Shell use (one line, for ``read``; exit status 3 with the reason on stderr when the run cannot go ahead):
``python -m qwenvl.machine --launch [--nproc N] [--bf16 True|False]`` prints
``HAS_CUDA GPU_COUNT BF16_OK HAS_SHUTDOWN_FLAG``; ``python -m qwenvl.machine`` only checks.
The GPUs are seen with ``nvidia-smi`` (or ``/dev/nvidia*``), not with torch: that is what tells a broken CUDA
from a machine without GPUs.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import warnings
from dataclasses import dataclass, field

EXIT_UNUSABLE = 3
ALLOW_CPU = "ALLOW_CPU"
# The oldest Linux driver each CUDA major version runs on (NVIDIA's compatibility table; minor versions of a
# major share it).
MIN_DRIVER = {11: "450.80.02", 12: "525.60.13", 13: "580.65.06"}
# CUDA builds of PyTorch's wheels, newest last (which exist depends on the torch version).
TORCH_CUDA_BUILDS = ("cu118", "cu121", "cu124", "cu126", "cu128", "cu129", "cu130")


@dataclass
class Machine:
    """What nvidia-smi and torch say. ``gpus``: the NVIDIA GPUs the machine has (names, or device files when
    nvidia-smi is missing); ``cuda``: whether torch can use them; ``cuda_warning``: what torch said when not."""

    gpus: list[str] = field(default_factory=list)
    driver: str | None = None
    driver_cuda: str | None = None
    torch: str = ""
    torch_cuda: str | None = None
    cuda: bool = False
    gpu_count: int = 0
    bf16: bool = False
    gpu_name: str | None = None
    cuda_warning: str | None = None
    hidden: bool = False


def _nvidia_smi(*args: str) -> str | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        proc = subprocess.run([exe, *args], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


def nvidia_gpus() -> tuple[list[str], str | None, str | None]:
    """``(GPUs, driver version, newest CUDA the driver runs)`` from nvidia-smi; without it, ``/dev/nvidiaN``."""
    listed = _nvidia_smi("--query-gpu=name,driver_version", "--format=csv,noheader")
    if listed is None:
        return sorted(p for p in glob.glob("/dev/nvidia[0-9]*")), None, None
    rows = [[c.strip() for c in line.split(",")] for line in listed.splitlines() if line.strip()]
    names = [r[0] for r in rows]
    driver = rows[0][1] if rows and len(rows[0]) > 1 else None
    header = _nvidia_smi() or ""
    found = re.search(r"CUDA Version:\s*([0-9.]+)", header)
    return names, driver, found.group(1) if found else None


def probe() -> Machine:
    """The machine as a run sees it (imports torch; never creates a CUDA context beyond torch's own check)."""
    gpus, driver, driver_cuda = nvidia_gpus()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import torch

        cuda = torch.cuda.is_available()
    said = [str(w.message) for w in caught if "cuda" in str(w.message).lower()]
    m = Machine(
        gpus=gpus,
        driver=driver,
        driver_cuda=driver_cuda,
        torch=torch.__version__,
        torch_cuda=torch.version.cuda,
        cuda=cuda,
        cuda_warning=" ".join(said) or None,
        hidden=os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"),
    )
    if cuda:
        m.gpu_count = torch.cuda.device_count()
        m.bf16 = bool(torch.cuda.is_bf16_supported())
        m.gpu_name = torch.cuda.get_device_name(0)
    return m


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text))


def _torch_build_hint(m: Machine) -> str:
    base = m.torch.split("+")[0]
    if m.driver_cuda:
        most = _version_tuple(m.driver_cuda)[:2]
        fits = [b for b in TORCH_CUDA_BUILDS if (int(b[2:4]), int(b[4:])) <= most]
        if fits:
            return (
                f"a torch build for CUDA {m.driver_cuda} or older, e.g. `pip install torch=={base} torchvision "
                f"--index-url https://download.pytorch.org/whl/{fits[-1]}` (which CUDA builds exist depends on the "
                "torch version)"
            )
    return "a torch build for the CUDA this driver supports (`nvidia-smi` prints it as 'CUDA Version')"


def cuda_problem(m: Machine) -> str | None:
    """Why torch cannot use this machine's GPUs and what to do, or None (no GPUs, or usable ones, or hidden on
    purpose with ``CUDA_VISIBLE_DEVICES=""``)."""
    if m.cuda or not m.gpus or m.hidden:
        return None
    shown = f"{len(m.gpus)} x {m.gpus[0]}" if not m.gpus[0].startswith("/dev/") else ", ".join(m.gpus)
    lines = [f"this machine has NVIDIA GPUs ({shown}) but torch {m.torch} cannot use them."]
    if m.torch_cuda is None:
        lines.append(f"Cause: torch {m.torch} is a CPU-only build.")
        lines.append(f"Fix: install {_torch_build_hint(m)}.")
    else:
        need = MIN_DRIVER.get(_version_tuple(m.torch_cuda)[0])
        driver = f"driver {m.driver}" + (f" (CUDA {m.driver_cuda} at most)" if m.driver_cuda else "")
        if m.driver and need and _version_tuple(m.driver) < _version_tuple(need):
            lines.append(
                f"Cause: torch {m.torch} is built for CUDA {m.torch_cuda}, which needs NVIDIA driver {need} or newer; "
                f"this machine has {driver}."
            )
            lines.append(
                f"Fix: upgrade the NVIDIA driver to {need.split('.')[0]} or newer, or install {_torch_build_hint(m)}."
            )
        else:
            lines.append(
                f"Cause: not the driver's age (torch built for CUDA {m.torch_cuda}; {driver if m.driver else 'driver unknown'})"
                ": the devices may not be reachable from here (a container started without --gpus, permissions "
                "on /dev/nvidia*)."
            )
            lines.append(
                "Fix: check that `python -c 'import torch; torch.cuda.init()'` works, and the device files."
            )
    if m.cuda_warning:
        lines.append(f"torch said: {m.cuda_warning}")
    lines.append(
        "A run in an environment with such a torch: README, 'Your own environment' (PYTHON=...). "
        f"{ALLOW_CPU}=1 runs on the CPU anyway (a 4B model: days, not hours)."
    )
    return "\n  ".join(lines)


def _bool(text: str | None) -> bool | None:
    if text in (None, ""):
        return None
    return str(text).strip().lower() in ("1", "true", "yes")


def launch_problems(m: Machine, nproc: int | None = None, bf16: bool | None = None) -> list[str]:
    """What stops a GPU launch: more processes than visible GPUs; bf16 on a GPU without it (``bf16`` None: the
    launcher's default, bf16 where the GPU has it, also stopped on a GPU without it, since the guide trains in
    bf16). Nothing for a CPU run."""
    if not m.cuda:
        return []
    problems = []
    if nproc is not None and nproc > m.gpu_count:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        problems.append(
            f"NPROC_PER_NODE={nproc} but torch sees {m.gpu_count} GPU(s)"
            + (f" (CUDA_VISIBLE_DEVICES={visible})" if visible is not None else "")
            + f": one process per GPU, so set NPROC_PER_NODE={m.gpu_count} or make more GPUs visible."
        )
    if not m.bf16 and bf16 is not False:
        problems.append(
            f"{m.gpu_name} has no bf16 support (it needs an Ampere or newer GPU), and the guide's run trains in "
            "bf16: set BF16=False to train in fp32 (about twice the activation memory, and slower), or use a "
            "GPU with bf16."
        )
    return problems


def check(m: Machine, nproc: int | None = None, bf16: bool | None = None, out=None) -> bool:
    """Print every problem to ``out`` (stderr by default): ``error:``, or ``warning:`` where ``ALLOW_CPU=1``
    lets a broken CUDA through. True when the run may go ahead."""
    out = sys.stderr if out is None else out
    ok = True
    problem = cuda_problem(m)
    if problem:
        allowed = _bool(os.environ.get(ALLOW_CPU)) is True
        print(f"{'warning' if allowed else 'error'}: {problem}", file=out)
        if allowed:
            print(f"warning: {ALLOW_CPU}=1: running on the CPU.", file=out)
        ok = allowed
    for p in launch_problems(m, nproc, bf16):
        print(f"error: {p}", file=out)
        ok = False
    return ok


def require_usable_device() -> None:
    """For Python entry points (evaluation): exit with :data:`EXIT_UNUSABLE` before any model loads when this
    machine's GPUs are unusable (unless ``ALLOW_CPU=1``)."""
    if not check(probe()):
        raise SystemExit(EXIT_UNUSABLE)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--launch", action="store_true", help="print HAS_CUDA GPU_COUNT BF16_OK HAS_SHUTDOWN_FLAG"
    )
    parser.add_argument(
        "--nproc", default=None, help="processes per node the launch asks for (empty: default)"
    )
    parser.add_argument(
        "--bf16", default=None, help="bf16 the launch asks for: True, False or empty (default)"
    )
    args = parser.parse_args(argv)
    m = probe()
    nproc = int(args.nproc) if args.nproc not in (None, "") else None
    if not check(m, nproc, _bool(args.bf16)):
        return EXIT_UNUSABLE
    if args.launch:
        from qwenvl.compat import torchrun_has_shutdown_timeout

        print(int(m.cuda), m.gpu_count, int(m.bf16), int(torchrun_has_shutdown_timeout()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
