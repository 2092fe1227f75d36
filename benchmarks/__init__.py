"""Benchmarks: scripts that measure, print tables and write their rows as JSON.

    python -m benchmarks [NAME ...] [--quick]     # all of them -> benchmarks/results/*.json
    python -m benchmarks.report                   # README results section + docs/figures/

Each result file is ``{"benchmark", "meta", "rows"}``: ``meta`` records the machine and the
command (see `machine`), ``rows`` the measurements.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import sys
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    """Where and how a benchmark ran: CPU, cores, threads, memory, GPU, versions, load."""
    info = {
        "cpu": _cpu_model(), "cores": os.cpu_count(), "torch threads": torch.get_num_threads(),
        "os": platform.platform(), "python": platform.python_version(),
        "torch": torch.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    try:
        info["memory GB"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
                                  / 2**30, 1)
        info["load average"] = round(os.getloadavg()[0], 2)  # other work on the machine
    except (ValueError, OSError, AttributeError):
        pass
    info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return info


def write_results(path: str | os.PathLike | None, name: str, rows: list[dict],
                  argv: list[str] | None = None) -> dict:
    """Write ``{"benchmark": name, "meta": machine() + command, "rows": rows}`` to ``path``."""
    doc = {"benchmark": name,
           "meta": {**machine(), "command": " ".join(
               ["python -m", f"benchmarks.{name}", *(sys.argv[1:] if argv is None else argv)])},
           "rows": rows}
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc, indent=1))
    return doc


def read_results(path: str | os.PathLike) -> dict:
    """A result file as ``{"benchmark", "meta", "rows"}`` (a bare list of rows gets
    ``meta = {}``)."""
    path = Path(path)
    doc = json.loads(path.read_text())
    if isinstance(doc, list):
        return {"benchmark": path.stem, "meta": {}, "rows": doc}
    return {"benchmark": doc.get("benchmark", path.stem), "meta": doc.get("meta", {}),
            "rows": doc.get("rows", [])}
