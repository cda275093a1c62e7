"""How long `onegen` takes to answer `--help` and argument errors, against `python -c pass` in the same run.

    python bench/cli_startup.py [--repeats 5]

Each command runs in a fresh process, `--repeats` times, interleaved with the baseline (the machine is
shared); printed per command: the median wall seconds, the ratio to the baseline's median, and the
median with the baseline subtracted (what onegen itself costs). The target (issue 12) is under 1 s per
command; the mechanism (no torch / ray / transformers / pyarrow at parse time) is tested in
tests/pipelines/test_cli_entry.py. Results: bench/results/cli_startup.txt.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

COMMANDS = {
    "python -c pass (baseline)": ["-c", "pass"],
    "onegen --help": ["-m", "onegen.pipelines.cli.main", "--help"],
    "onegen build --help": ["-m", "onegen.pipelines.cli.main", "build", "--help"],
    "onegen annotate --help": ["-m", "onegen.pipelines.cli.main", "annotate", "--help"],
    "onegen train --help": ["-m", "onegen.pipelines.cli.main", "train", "--help"],
    "onegen sample --help": ["-m", "onegen.pipelines.cli.main", "sample", "--help"],
    "onegen build (argument error)": ["-m", "onegen.pipelines.cli.main", "build"],
    "onegen train --bf16 x (argument error)": ["-m", "onegen.pipelines.cli.main", "train", "--bf16", "x"],
}


def _seconds(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], capture_output=True, check=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    options = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(options.repeats):
        for name, args in COMMANDS.items():
            times[name].append(_seconds(args))
    baseline = statistics.median(times["python -c pass (baseline)"])
    lines = [f"cli_startup on {platform.node()} ({platform.processor() or platform.machine()}), "
             f"python {platform.python_version()}, {options.repeats} repeats, medians"]
    for name, values in times.items():
        median = statistics.median(values)
        lines.append(f"{name:<42} {median:6.3f} s  x{median / baseline:5.1f} of baseline  "
                     f"(+{median - baseline:.3f} s)")
    text = "\n".join(lines)
    print(text)
    out = Path(__file__).parent / "results" / "cli_startup.txt"
    out.write_text(text + "\n")


if __name__ == "__main__":
    main()
