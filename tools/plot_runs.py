"""Test-accuracy curves of several training runs in one PNG (each run a ``mondeq train --out`` folder).

    python tools/plot_runs.py OUT.png RUN_DIR[=LABEL] [RUN_DIR[=LABEL] …]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def main(argv: list[str]) -> None:
    if len(argv) < 2:
        sys.exit(__doc__.strip().splitlines()[-1].strip())
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for arg in argv[1:]:
        run, _, label = arg.partition("=")
        path = Path(run) / "metrics.jsonl"
        if not path.is_file():
            sys.exit(f"plot_runs: {path} does not exist")
        history = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        ax.plot([h["epoch"] for h in history], [100 * h["test_acc"] for h in history], "o-",
                label=label or Path(run).name)
    ax.set(xlabel="epoch", ylabel="test accuracy (%)", title="test accuracy per epoch")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(argv[0], dpi=100)


if __name__ == "__main__":
    main(sys.argv[1:])
