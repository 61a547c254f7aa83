"""How many CPU cores this process may use, and how many of them other work leaves free
(for ``threads=auto`` and the simulator's ``workers``)."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")  # cgroup v2: "<quota> <period>" or "max <period>"
PROC_STAT = Path("/proc/stat")  # Linux: per-CPU jiffies since boot
SAMPLE_S = 0.1  # seconds over which the other processes' use of our cores is measured


def usable_cores() -> int:
    """The cores this process may use: the least of its CPU affinity, the cgroup's CPU quota
    (a container's limit) and ``SLURM_CPUS_PER_TASK`` (a cluster job's share)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    try:
        quota, period = CGROUP_CPU_MAX.read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if slurm.isdigit() and int(slurm) > 0:
        cores = min(cores, int(slurm))
    return max(1, cores)


def _jiffies() -> tuple[int, int] | None:
    """(busy, total) jiffies of the CPUs this process may run on, or None off Linux."""
    try:
        mine = {f"cpu{k}" for k in os.sched_getaffinity(0)}
        busy = total = 0
        for line in PROC_STAT.read_text().splitlines():
            name, *fields = line.split()
            if name in mine:
                values = [
                    int(v) for v in fields[:8]
                ]  # user nice system idle iowait irq softirq steal
                total += sum(values)
                busy += sum(values) - values[3] - values[4]
        return (busy, total) if total else None
    except (AttributeError, OSError, ValueError):
        return None


def busy_elsewhere() -> float | None:
    """Cores of this process's CPUs that other processes kept busy over the last ``SAMPLE_S``
    seconds (this process's own use taken out), or None where it cannot be measured."""
    before, own_before = _jiffies(), os.times()
    time.sleep(SAMPLE_S)
    after, own_after = _jiffies(), os.times()
    if before is None or after is None or after[1] <= before[1]:
        return None
    cpus = len(os.sched_getaffinity(0))
    busy = cpus * (after[0] - before[0]) / (after[1] - before[1])
    own = (own_after.user - own_before.user + own_after.system - own_before.system) / SAMPLE_S
    return max(0.0, busy - own)


def free_cores(cores: int, busy: float | None = None) -> int:
    """Of ``cores``, those the rest of the machine leaves free (``busy``: cores other work
    keeps busy, measured when None; else the 1-minute load average), at least 1. A busy node
    then runs fewer threads, which a CPU job beside them cannot leave waiting on each other."""
    if busy is None:
        busy = busy_elsewhere()
    if busy is None:
        try:
            busy = os.getloadavg()[0]
        except OSError:
            return cores
    return max(1, min(cores, cores - int(busy + 0.5)))
