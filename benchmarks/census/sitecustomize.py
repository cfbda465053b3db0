"""A memory census on demand, for the soaks (``benchmarks/load_soak.py --census``); never part of the service.

Put on the server's ``PYTHONPATH`` with ``HNDSR_CENSUS_DIR`` set, this module (Python imports a
``sitecustomize`` at start-up) makes every process of the server answer SIGUSR2 with one JSON file in that
folder, ``census-<pid>-<n>.json``: the live Python objects by type (after a full garbage collection) and
glibc's own account of its heap (``mallinfo2``; ``malloc_info``'s totals over every arena). What RSS cannot
tell apart (objects kept, or freed memory the allocator keeps) these do.
"""

from __future__ import annotations

import os
import signal

CENSUS_DIR = os.environ.get("HNDSR_CENSUS_DIR")
TOP_TYPES = 30


def _mallinfo2() -> dict[str, int]:
    import ctypes

    fields = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
              "keepcost")

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in fields]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    info = libc.mallinfo2()
    return {name: int(getattr(info, name)) for name in fields}


def _malloc_info_totals(path: str) -> list[str]:
    """``malloc_info``'s process-wide lines (after the last arena's): free chunks by kind, and the system's."""
    import ctypes

    libc = ctypes.CDLL("libc.so.6")
    libc.fopen.restype = ctypes.c_void_p
    handle = libc.fopen(path.encode(), b"w")
    libc.malloc_info(0, ctypes.c_void_p(handle))
    libc.fclose(ctypes.c_void_p(handle))
    with open(path) as xml:
        text = xml.read()
    os.unlink(path)
    tail = text.rsplit("</heap>", 1)[-1]
    return [line.strip() for line in tail.splitlines() if line.strip().startswith(("<total", "<system", "<aspace"))]


def _census(_signum: int, _frame: object) -> None:
    """Runs in the worker's main thread wherever the signal found it: it must never raise there."""
    import json

    assert CENSUS_DIR is not None
    try:
        report = _take_census()
    except Exception as exc:  # an older glibc without mallinfo2, a full disk: said in the file, not raised
        report = {"pid": os.getpid(), "error": repr(exc)}
    try:
        count = sum(1 for name in os.listdir(CENSUS_DIR) if name.startswith(f"census-{os.getpid()}-"))
        target = os.path.join(CENSUS_DIR, f"census-{os.getpid()}-{count}.json")
        with open(target + ".part", "w") as out:
            json.dump(report, out)
        os.replace(target + ".part", target)  # the soak reads only whole files
    except OSError:
        pass  # the soak waits for the file and says none came


def _take_census() -> dict:
    import collections
    import gc
    import time

    assert CENSUS_DIR is not None
    gc.collect()
    objects = gc.get_objects()
    types = collections.Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in objects)
    del objects
    return {"pid": os.getpid(), "time": time.time(), "gc_objects": sum(types.values()),
            "top_types": types.most_common(TOP_TYPES), "mallinfo2": _mallinfo2(),
            "malloc_info_totals": _malloc_info_totals(os.path.join(CENSUS_DIR, f".malloc-{os.getpid()}.xml"))}


if CENSUS_DIR:
    signal.signal(signal.SIGUSR2, _census)
