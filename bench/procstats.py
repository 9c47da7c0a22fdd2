"""Resource readings from /proc: RSS and CPU time of a process and all its descendants,
the machine's description, and file-descriptor limits."""

from __future__ import annotations

import os
import platform
import resource
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
PROC = Path("/proc")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may contain spaces: split after the last ')'.
    return raw[raw.rindex(")") + 2 :].split()


def descendants(pid: int) -> list[int]:
    """`pid` and every live descendant."""
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        if (PROC / str(current)).exists():
            out.append(current)
            todo.extend(children.get(current, ()))
    return out


def _status_kib(pid: int, field: str) -> int:
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def rss_bytes(pids: list[int]) -> int:
    """Sum of VmRSS over `pids` and their descendants (shared pages count once per process,
    as `ps` would show them)."""
    return sum(_status_kib(p, "VmRSS") for root in pids for p in descendants(root)) * 1024


def peak_rss_bytes(pids: list[int]) -> int:
    """Sum of VmHWM (each process's peak RSS since it started)."""
    return sum(_status_kib(p, "VmHWM") for root in pids for p in descendants(root)) * 1024


def server_connections(port: int) -> int:
    """TCP connections whose local end is `port` (the server's side), in any state that still
    holds a socket in the server: not LISTEN, TIME_WAIT or CLOSE."""
    n = 0
    for name in ("tcp", "tcp6"):
        try:
            lines = (PROC / "net" / name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 3 and int(fields[1].rsplit(":", 1)[1], 16) == port \
                    and fields[3] not in ("0A", "06", "07"):
                n += 1
    return n


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of `pids` and their live descendants."""
    ticks = 0
    for root in pids:
        for pid in descendants(root):
            fields = _stat_fields(pid)
            if fields is not None:
                # After the ')': state=0, ppid=1, ... utime=11, stime=12 (fields 14, 15 of stat).
                ticks += int(fields[11]) + int(fields[12])
    return ticks / CLK_TCK


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (all CPUs, /proc/stat), to tell how much
    of a measured phase went to processes outside the bench."""
    try:
        fields = [int(x) for x in (PROC / "stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    busy = sum(fields[:8]) - idle  # user nice system idle iowait irq softirq steal
    return busy / CLK_TCK


def self_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def raise_nofile() -> int:
    """Raise this process's RLIMIT_NOFILE soft limit to the hard limit; return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def machine() -> dict[str, str]:
    info: dict[str, str] = {"nproc": str(os.cpu_count() or 0), "kernel": platform.release()}
    try:
        for line in (PROC / "cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kib = _meminfo("MemTotal")
    if mem_kib:
        info["memory"] = f"{mem_kib / 1024 / 1024:.1f} GiB"
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    info["nofile"] = f"{soft} (hard {hard})"
    try:
        low, high = (PROC / "sys/net/ipv4/ip_local_port_range").read_text().split()
        info["ephemeral ports"] = f"{low}-{high}"
    except (OSError, ValueError):
        pass
    return info


def _meminfo(field: str) -> int:
    try:
        for line in (PROC / "meminfo").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def load_average() -> str:
    try:
        return " ".join((PROC / "loadavg").read_text().split()[:3])
    except OSError:
        return "?"
