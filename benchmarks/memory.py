"""Peak resident memory of a training step against its live peak, with glibc's default heap and with a fixed
mmap threshold, and the step time of each, in one run (Linux with glibc 2.33 or newer).

Each child process builds one model (the paper's sizes, batch 128, Peaceman–Rachford at the training tolerance
1e-2, random input of the data set's shape), takes two warm-up steps and then:

* **live peak**: the largest number of bytes the process holds in ``malloc`` blocks (``mallinfo2``: heap chunks
  in use plus mmapped ones), read after every operator of one step (a ``TorchDispatchMode``), plus the resident
  memory that is not heap (libraries and code: the resident size minus the bytes in use, read after the model is
  built). Workspaces an operator frees before it returns are not seen, so this is a lower bound and the ratio
  below an upper one.
* **peak RSS**: the process's high-water mark of resident memory (``VmHWM``) over the warm-up and the timed steps.
* **step**: the median time of the timed steps (without the dispatch mode).

The variants differ only in the environment of the child: ``default`` (glibc's dynamic mmap threshold: freed
large blocks raise it, so later ones come from the heap, whose freed memory stays resident) and
``mmap-threshold`` (``MALLOC_MMAP_THRESHOLD_`` fixed at 1 MiB: every large block is mapped on allocation and
unmapped on free, so resident memory follows live memory, at the price of faulting fresh pages in for every
block), and the same with ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1`` (those mappings in transparent huge pages,
512 times fewer faults where the kernel's THP mode is ``madvise`` or ``always``). Rounds alternate the variants;
the step times are reported as ratios to the default's.

    python benchmarks/memory.py [--models mnist-conv,mnist-multitier,mnist-fc] [--rounds 2] [--steps 4] [--json F]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from compare_step import MODELS  # the same model names and sizes

VARIANTS = {
    "default": {},
    "mmap-threshold": {"MALLOC_MMAP_THRESHOLD_": str(1 << 20)},
    "mmap-threshold+hugetlb": {"MALLOC_MMAP_THRESHOLD_": str(1 << 20), "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"},
}

CHILD = """
import ctypes, json, sys, time
import torch, torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from mondeq.data import DATASETS
from mondeq.models import build_model
from mondeq.solvers import PeacemanRachford

class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info

def in_use():
    info = libc.mallinfo2()
    return (info.uordblks + info.hblkhd) / 2**20

def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key)) / 1024

class Peak(TorchDispatchMode):
    peak = 0.0
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.peak = max(self.peak, in_use())
        return out

model_name, dataset, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
info = DATASETS[dataset]
torch.manual_seed(0)
model = build_model(model_name, info.input_shape, info.num_classes, solver=PeacemanRachford(tol=1e-2))
x, y = torch.randn(128, *info.input_shape), torch.randint(0, info.num_classes, (128,))
opt = torch.optim.Adam(model.parameters(), lr=1e-6)
non_heap = status("VmRSS") - in_use()

def step():
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()

for _ in range(2):
    step()
mode = Peak()
with mode:
    step()
times = []
for _ in range(steps):
    t = time.perf_counter()
    step()
    times.append(time.perf_counter() - t)
print(json.dumps({"step_s": sorted(times)[len(times) // 2], "live_peak_mb": non_heap + mode.peak,
                  "non_heap_mb": non_heap, "peak_rss_mb": status("VmHWM")}))
"""


def _measure(model: str, dataset: str, steps: int, env: dict[str, str]) -> dict:
    src = Path(__file__).resolve().parent.parent / "src"
    full = {**os.environ, **env, "PYTHONPATH": str(src)}
    out = subprocess.run([sys.executable, "-c", CHILD, model, dataset, str(steps)], env=full, capture_output=True,
                         text=True)
    if out.returncode != 0:
        sys.exit(f"memory: the child for {model} on {dataset} failed: {out.stderr.strip().splitlines()[-1]}")
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mnist-conv,mnist-multitier,mnist-fc")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per child (median)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if not sys.platform.startswith("linux"):
        sys.exit("memory: needs Linux with glibc (mallinfo2, /proc/self/status)")
    names = args.models.split(",")
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        sys.exit(f"memory: unknown model(s) {unknown}; choose from {', '.join(MODELS)}")
    rows = []
    for name in names:
        model, dataset = MODELS[name]
        runs: dict[str, list[dict]] = {k: [] for k in VARIANTS}
        for r in range(args.rounds):
            for variant in list(VARIANTS) if r % 2 == 0 else list(VARIANTS)[::-1]:
                runs[variant].append(_measure(model, dataset, args.steps, VARIANTS[variant]))
        row: dict = {"model": name}
        for variant, results in runs.items():
            row[variant] = {k: statistics.median(res[k] for res in results) for k in results[0]}
            row[variant]["rss_over_live"] = row[variant]["peak_rss_mb"] / row[variant]["live_peak_mb"]
            row[variant]["time_ratio"] = row[variant]["step_s"] / row["default"]["step_s"]
        rows.append(row)
        print(f"{name}: live peak {row['default']['live_peak_mb']:.0f} MB", flush=True)
        for v in VARIANTS:
            print(f"  {v:<24} peak RSS {row[v]['peak_rss_mb']:5.0f} MB = {row[v]['rss_over_live']:.2f}× the live peak, "
                  f"step {row[v]['step_s']:.3f} s = {row[v]['time_ratio']:.2f}× the default's", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
