"""Shared helpers for ``benchmarks/bench_*.py``: machine description, side-by-side timing, RESULTS.md appends.

Import it from a bench script with ``from _common import ...`` (the scripts run as ``python benchmarks/x.py``, so
``benchmarks/`` is on ``sys.path``). Timings of competing implementations are taken *interleaved* (round-robin,
the order rotating every round) and reported as medians, so a load spike from other processes hits every
contender alike; figures are ratios measured in one run.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
M = TypeVar("M")

RESULTS = Path(__file__).with_name("RESULTS.md")
HEADER = """# Measured benchmark figures

Each section names the script, the machine (CPU model, cores, torch version) and the date. Figures are ratios
measured side by side in one run of the script (ours vs a bare forward/backward, ours vs the peer libraries installed
by the `bench` extra). `make bench` runs every `benchmarks/bench_*.py --append-results`.
"""


def cpu_name() -> str:
    """The CPU model from ``/proc/cpuinfo`` (or what ``platform`` knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine() -> dict[str, object]:
    """CPU model, cores, load, torch version, threads and accelerator of this run."""
    import torch

    info: dict[str, object] = {
        "cpu": cpu_name(), "cores": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }
    try:
        info["load"] = round(os.getloadavg()[0], 1)
    except OSError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def machine_line() -> str:
    """One line for a RESULTS.md section."""
    m = machine()
    parts = [f"{m['cpu']}, {m['cores']} cores", f"torch {m['torch']} ({m['threads']} threads)",
             f"Python {m['python']}"]
    if "gpu" in m:
        parts.append(f"GPU {m['gpu']}")
    if "load" in m:
        parts.append(f"load average {m['load']} when written (shared machine)")
    return "; ".join(parts)


def parser(description: str, quick: bool = True) -> argparse.ArgumentParser:
    """An argument parser with the options every bench script takes (``--quick`` only where ``quick``)."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--append-results", action="store_true", help=f"append the figures to {RESULTS.name}")
    ap.add_argument("--repeats", type=int, default=3, help="timed rounds per contender (medians reported)")
    if quick:
        ap.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run; figures not comparable)")
    return ap


def timed_call(fn: Callable[[], T], sync: Callable[[], None] | None = None) -> tuple[float, T]:
    """Seconds one call of ``fn`` takes, and what it returned (``sync`` e.g. ``torch.cuda.synchronize`` before
    reading the clock)."""
    if sync:
        sync()
    t0 = time.perf_counter()
    out = fn()
    if sync:
        sync()
    return time.perf_counter() - t0, out


def timed(fn: Callable[[], object], sync: Callable[[], None] | None = None) -> float:
    """Seconds one call of ``fn`` takes (``sync`` e.g. ``torch.cuda.synchronize`` before reading the clock)."""
    return timed_call(fn, sync)[0]


def clocked(fn: Callable[[], T]) -> tuple[float, float, T]:
    """CPU seconds (``time.process_time``, all threads of this process), wall seconds and the result of one call."""
    c0, w0 = time.process_time(), time.perf_counter()
    out = fn()
    return time.process_time() - c0, time.perf_counter() - w0, out


def rotation(names: Sequence[str], r: int) -> list[str]:
    """The order of round ``r``: ``names`` rotated left by ``r``, so that every contender leads in turn."""
    k = r % len(names)
    return [*names[k:], *names[:k]]


def interleaved(contenders: Mapping[str, Callable[[], object]], repeats: int, warmup: int,
                measure: Callable[[Callable[[], object]], M]) -> dict[str, list[M]]:
    """``measure(contender)`` for every contender ``repeats`` times, round-robin in :func:`rotation` order, after
    ``warmup`` untimed rounds. Returns ``name -> [measurement per round]``."""
    names = list(contenders)
    for _ in range(warmup):
        for n in names:
            contenders[n]()
    out: dict[str, list[M]] = {n: [] for n in names}
    for r in range(repeats):
        for n in rotation(names, r):
            out[n].append(measure(contenders[n]))
    return out


def side_by_side(contenders: Mapping[str, Callable[[], object]], repeats: int = 3, warmup: int = 1,
                 sync: Callable[[], None] | None = None) -> dict[str, list[float]]:
    """Time every contender ``repeats`` times, interleaved round-robin (order rotated each round).

    Returns:
        ``name -> [seconds per round]``.
    """
    return interleaved(contenders, repeats, warmup, lambda fn: timed(fn, sync))


def side_by_side_cpu(contenders: Mapping[str, Callable[[], object]], repeats: int = 3, warmup: int = 1
                     ) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """CPU and wall seconds per call of each contender, interleaved as in :func:`side_by_side`.

    CPU time (``time.process_time``) is what to judge on a shared machine, where the wall clock mostly measures
    how long the scheduler kept us waiting.

    Returns:
        ``(name -> [CPU seconds per round], name -> [wall seconds per round])``.
    """
    both = interleaved(contenders, repeats, warmup, lambda fn: clocked(fn)[:2])
    return ({n: [c for c, _ in v] for n, v in both.items()}, {n: [w for _, w in v] for n, v in both.items()})


def side_by_side_user(contenders: Mapping[str, Callable[[], object]], repeats: int = 3, warmup: int = 1
                      ) -> tuple[dict[str, list[float]], dict[str, list[float]], dict[str, list[float]]]:
    """As :func:`side_by_side_cpu`, plus the user-mode share of the CPU time (``os.times``).

    CPU time = user + system; the system part is mostly page faults, which depend on the allocator's state (glibc
    maps and unmaps buffers above its mmap threshold on every call), so a ratio of user times compares the compute
    alone.

    Returns:
        ``(name -> [CPU s], name -> [wall s], name -> [user s])`` per round.
    """
    def measure(fn: Callable[[], object]) -> tuple[float, float, float]:
        u0 = os.times().user
        cpu, wall, _ = clocked(fn)
        return cpu, wall, os.times().user - u0

    got = interleaved(contenders, repeats, warmup, measure)
    return tuple({n: [m[i] for m in v] for n, v in got.items()} for i in range(3))  # type: ignore[return-value]


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def ratios(times: Mapping[str, Sequence[float]], baseline: str) -> dict[str, float]:
    """``name -> median(name) / median(baseline)``."""
    base = median(times[baseline])
    return {n: median(t) / base for n, t in times.items()}


def markdown_table(rows: Sequence[Sequence[object]], header: Sequence[str]) -> str:
    """A Markdown table."""
    out = ["| " + " | ".join(str(h) for h in header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out) + "\n"


def timing_table(times: Mapping[str, Sequence[float]], baseline: str, unit: float = 1.0, unit_name: str = "s"
                 ) -> str:
    """Median, min and ratio to ``baseline`` per contender, as Markdown (``unit`` divides the seconds)."""
    rat = ratios(times, baseline)
    rows = [(n, f"{median(t) / unit:.3g} {unit_name}", f"{min(t) / unit:.3g} {unit_name}", f"{rat[n]:.2f}x")
            for n, t in times.items()]
    return markdown_table(rows, ("contender", "median", "best", f"vs {baseline}"))


def append_results(title: str, body: str, script: str) -> Path:
    """Append a section ``## title`` (script, machine, date, then ``body``) to RESULTS.md.

    The file is re-read right before appending (other scripts append their own sections); it is created with
    the standard header when missing. Nothing already there is rewritten.
    """
    if not RESULTS.exists():
        RESULTS.write_text(HEADER)
    existing = RESULTS.read_text()
    sep = "" if existing.endswith("\n\n") else ("\n" if existing.endswith("\n") else "\n\n")
    stamp = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    section = (f"{sep}## {title}\n\n`{script}` — {stamp}\n\nMachine: {machine_line()}\n\n{body.rstrip()}\n")
    with RESULTS.open("a") as fh:
        fh.write(section)
    return RESULTS
