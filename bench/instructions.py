#!/usr/bin/env python3
"""Instructions per request / per WebSocket message on the in-process hot path (bench/hotpath.py).

Wall time on a shared 2-core VM drifts 10-20 % between runs, which hides a change worth a few
percent. valgrind's callgrind counts executed instructions instead: the same code gives the same
count whatever else the machine does. Running N and 2N iterations and taking the difference
removes start-up and import costs, leaving the cost of one iteration.

    python3 bench/instructions.py ws          # the /ws echo, per message
    python3 bench/instructions.py http        # the HTTP scenarios together, per request

Compare two commits by running it on each. It says nothing about kernel time or cache misses
(bench/run.py measures the real thing); it tells whether Python-level work went up or down.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HTTP_SCENARIOS = 5  # REQUESTS in hotpath.py: each runs N requests


def instructions(python: str, only: str, n: int) -> int:
    with tempfile.NamedTemporaryFile(suffix=".callgrind") as out:
        proc = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out.name}",
             python, str(ROOT / "bench" / "hotpath.py"), "--only", only, str(n)],
            cwd=ROOT, capture_output=True, text=True,
            # A fixed hash seed: set and dict layouts (and so the instruction count) repeat.
            env={**os.environ, "PYTHONHASHSEED": "0"})
    found = re.search(r"Collected : ([\d,]+)", proc.stderr)
    if proc.returncode != 0 or not found:
        sys.exit(f"instructions: valgrind run failed:\n{proc.stdout}\n{proc.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("only", choices=["ws", "http"])
    parser.add_argument("-n", type=int, default=5000, help="iterations in the shorter run")
    parser.add_argument("--python", default=str(ROOT / ".venv" / "bin" / "python"))
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("instructions: valgrind is not installed (apt-get install valgrind)")
    one = instructions(args.python, args.only, args.n)
    two = instructions(args.python, args.only, 2 * args.n)
    per = (two - one) / args.n / (HTTP_SCENARIOS if args.only == "http" else 1)
    unit = "message" if args.only == "ws" else "request (mean of the HTTP scenarios)"
    print(f"{per:,.0f} instructions per {unit}")


if __name__ == "__main__":
    main()
