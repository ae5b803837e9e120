"""A CPU budget for a benchmark's child processes: a Linux cgroup with a CFS quota (``--endpoint-cpu-share``).

On a machine with as many CPUs as endpoints, pinning each endpoint to a CPU of its own leaves nothing for
crawlkeeper, which then takes its share from the endpoints' CPUs. Giving each endpoint a fraction of its CPU
instead (the kernel's CFS bandwidth control: ``cpu.max`` in cgroup v2, ``cpu.cfs_quota_us`` in v1) is the same
layout scaled down: every endpoint has a fixed budget, and crawlkeeper keeps the rest, as it would on its own
CPUs. Needs write access to the cgroup file system (root, or a delegated cgroup); :func:`available` says.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
PERIOD_US = 100_000


def _v1_dir() -> Path | None:
    for name in ("cpu", "cpu,cpuacct"):
        if (ROOT / name / "cpu.cfs_quota_us").exists():
            return ROOT / name
    return None


def _v2() -> bool:
    controllers = ROOT / "cgroup.controllers"
    return controllers.exists() and "cpu" in controllers.read_text().split()  # not "cpuset"


def available() -> str | None:
    """None if a CPU-limited cgroup can be made here, else why not."""
    base = _v1_dir() or (ROOT if _v2() else None)
    if base is None:
        return "no cgroup cpu controller (Linux CFS bandwidth) on this machine"
    if not os.access(base, os.W_OK):
        return f"{base} is not writable (run as root, or in a delegated cgroup)"
    if base == ROOT and not _v2_cpu_for_children():
        return f"the cpu controller cannot be enabled for {ROOT}'s children (cgroup.subtree_control refused +cpu)"
    return None


def _v2_cpu_for_children() -> bool:
    """Whether cgroups made under ROOT get ``cpu.max``: the cpu controller is (or can be) on in its subtree."""
    control = ROOT / "cgroup.subtree_control"
    with contextlib.suppress(OSError):
        control.write_text("+cpu")  # idempotent; refused in a delegated cgroup that was not given cpu
    with contextlib.suppress(OSError):
        return "cpu" in control.read_text().split()
    return False


class CpuShare:
    """A cgroup limited to ``share`` CPUs; :attr:`prefix` is a command prefix that runs a program inside it."""

    def __init__(self, name: str, share: float) -> None:
        self.share = share
        v1 = _v1_dir()
        if v1 is None and not _v2_cpu_for_children():  # checked before anything is made
            raise OSError(f"the cpu controller cannot be enabled for {ROOT}'s children")
        self.path = (v1 or ROOT) / f"crawlkeeper-bench-{name}-{os.getpid()}"
        self.path.mkdir(exist_ok=True)
        quota = max(1000, int(PERIOD_US * share))
        try:
            if v1 is not None:
                (self.path / "cpu.cfs_period_us").write_text(str(PERIOD_US))
                (self.path / "cpu.cfs_quota_us").write_text(str(quota))
            else:
                (self.path / "cpu.max").write_text(f"{quota} {PERIOD_US}")
        except OSError:
            self.path.rmdir()  # empty yet: nothing joined it
            raise
        # a shell that joins the cgroup, then becomes the program: everything it starts stays inside
        shell = shutil.which("sh") or "/bin/sh"
        self.prefix = [shell, "-c", f'echo $$ > "{self.path}/cgroup.procs" && exec "$@"', "sh"]

    def close(self, wait_s: float = 10.0) -> None:
        """Remove the cgroup: its processes were stopped by their owner; those still there are killed."""
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:  # busy: processes still exiting
                if time.monotonic() > deadline - wait_s / 2:
                    for pid in (self.path / "cgroup.procs").read_text().split():
                        with contextlib.suppress(OSError):
                            os.kill(int(pid), signal.SIGKILL)
                time.sleep(0.1)
        print(f"  (could not remove {self.path}: processes still in it)", flush=True)
