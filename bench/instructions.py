#!/usr/bin/env python3
"""Instructions per request / per WebSocket message on the in-process hot path (bench/hotpath.py).

Wall time on a shared 2-core VM drifts 10-20 % between runs, which hides a change worth a few
percent. valgrind's callgrind counts executed instructions instead: the same code gives the same
count whatever else the machine does. Running N and 2N iterations and taking the difference
removes start-up and import costs, leaving the cost of one iteration.

    python3 bench/instructions.py ws          # the /ws echo, per message
    python3 bench/instructions.py http        # the HTTP scenarios together, per request
    python3 bench/instructions.py forms       # bench/apps/http_app.py: each scenario, async and
                                              # sync, per request, and async ÷ sync
    python3 bench/instructions.py stages      # GET / and GET /json: parse, dispatch, write, the rest
    python3 bench/instructions.py observe     # GET / and GET /json (and GET / with a browser's 13
                                              # header fields) with the access log, metrics... on,
                                              # per request, every thread, and on ÷ off

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


def instructions(python: str, only: str, n: int, extra: tuple[str, ...] = ()) -> int:
    """Every thread's instructions together (callgrind's total) for ``hotpath.py --only``."""
    with tempfile.NamedTemporaryFile(suffix=".callgrind") as out:
        proc = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out.name}",
             python, str(ROOT / "bench" / "hotpath.py"), "--only", only, *extra, str(n)],
            cwd=ROOT, capture_output=True, text=True,
            # A fixed hash seed: set and dict layouts (and so the instruction count) repeat.
            env={**os.environ, "PYTHONHASHSEED": "0"})
    found = re.search(r"Collected : ([\d,]+)", proc.stderr)
    if proc.returncode != 0 or not found:
        sys.exit(f"instructions: valgrind run failed:\n{proc.stdout}\n{proc.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def thread_instructions(python: str, n: int, mode: str = "forms") -> list[int]:
    """Instructions of each job thread of ``hotpath.py --only forms|stages`` (main thread left out)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "cg"
        proc = subprocess.run(
            ["valgrind", "--tool=callgrind", "--separate-threads=yes", f"--callgrind-out-file={out}",
             python, str(ROOT / "bench" / "hotpath.py"), "--only", mode, str(n)],
            cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"})
        if proc.returncode != 0:
            sys.exit(f"instructions: valgrind run failed:\n{proc.stdout}\n{proc.stderr[-2000:]}")
        counts = {}
        for path in Path(tmp).glob("cg-*"):
            found = re.search(r"^(?:totals|summary): (\d+)", path.read_text(), re.M)
            counts[int(path.name.rsplit("-", 1)[1])] = int(found.group(1)) if found else 0
    return [counts[k] for k in sorted(counts)][1:]


def forms(python: str, n: int) -> None:
    listed = subprocess.run([python, str(ROOT / "bench" / "hotpath.py"), "--list-forms"],
                            cwd=ROOT, capture_output=True, text=True, check=True).stdout
    scenarios = [tuple(line.split("\t")) for line in listed.splitlines()]
    one = thread_instructions(python, n)
    two = thread_instructions(python, 2 * n)
    per = {(name, form): (b - a) / n for (name, form), a, b in zip(scenarios, one, two)}
    print(f"{'scenario':18s} {'async':>9s} {'sync':>9s} {'async/sync':>10s}   (instructions per request)")
    for name in dict.fromkeys(name for name, _ in per):
        a, s = per[(name, "async")], per[(name, "sync")]
        print(f"{name:18s} {a:9,.0f} {s:9,.0f} {a / s:10.3f}")


def stages(python: str, n: int) -> None:
    listed = subprocess.run([python, str(ROOT / "bench" / "hotpath.py"), "--list-stages"],
                            cwd=ROOT, capture_output=True, text=True, check=True).stdout
    jobs = [tuple(line.split("\t")) for line in listed.splitlines()]
    one = thread_instructions(python, n, "stages")
    two = thread_instructions(python, 2 * n, "stages")
    per = {job: (b - a) / n for job, a, b in zip(jobs, one, two)}
    print(f"{'scenario':10s} {'parse':>8s} {'dispatch':>9s} {'write':>8s} {'the rest':>9s} {'full sync':>10s} "
          f"{'full async':>11s} {'ceiling':>8s}   (instructions per request)")
    for name in dict.fromkeys(name for name, _, _ in jobs):
        parse, dispatch, write, full = (per[(name, "sync", stage)] for stage in ("parse", "dispatch", "write", "full"))
        print(f"{name:10s} {parse:8,.0f} {dispatch:9,.0f} {write:8,.0f} {full - parse - dispatch - write:9,.0f} "
              f"{full:10,.0f} {per[(name, 'async', 'full')]:11,.0f} {per[(name, 'ceiling', 'full')]:8,.0f}")


def observe(python: str, n: int, variants: list[str], forms: list[str]) -> None:
    """Each (scenario, form) of hotpath.py's OBSERVE_JOBS under each variant, one process per
    count; per request, the loop thread and the access log's writer thread together."""
    listed = subprocess.run([python, str(ROOT / "bench" / "hotpath.py"), "--list-observed"],
                            cwd=ROOT, capture_output=True, text=True, check=True).stdout
    jobs = [tuple(line.split("\t")) for line in listed.splitlines()]
    variants = ["off"] + [v for v in variants if v != "off"]
    print(f"{'scenario':18s} " + " ".join(f"{v:>18s}" for v in variants) + "   (instructions per request, on/off)")
    for index, (name, form) in enumerate(jobs):
        if form not in forms:
            continue
        per = {}
        for variant in variants:
            extra = ("--variant", variant, "--job", str(index))
            one = instructions(python, "observe", n, extra)
            two = instructions(python, "observe", 2 * n, extra)
            per[variant] = (two - one) / n
        cells = [f"{per['off']:18,.0f}"] + [f"{per[v]:10,.0f} {per[v] / per['off']:7.3f}" for v in variants[1:]]
        print(f"{name + ' (' + form + ')':18s} " + " ".join(cells), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("only", choices=["ws", "http", "forms", "stages", "observe"])
    parser.add_argument("-n", type=int, default=5000, help="iterations in the shorter run")
    parser.add_argument("--python", default=str(ROOT / ".venv" / "bin" / "python"))
    parser.add_argument("--variants", default="access-log,metrics",
                        help="observe: of hotpath.py's OBSERVE_VARIANTS (off is always measured)")
    parser.add_argument("--forms", default="async,sync", help="observe: async,sync")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("instructions: valgrind is not installed (apt-get install valgrind)")
    if args.only == "forms":
        forms(args.python, args.n)
        return
    if args.only == "stages":
        stages(args.python, args.n)
        return
    if args.only == "observe":
        observe(args.python, args.n, args.variants.split(","), args.forms.split(","))
        return
    one = instructions(args.python, args.only, args.n)
    two = instructions(args.python, args.only, 2 * args.n)
    per = (two - one) / args.n / (HTTP_SCENARIOS if args.only == "http" else 1)
    unit = "message" if args.only == "ws" else "request (mean of the HTTP scenarios)"
    print(f"{per:,.0f} instructions per {unit}")


if __name__ == "__main__":
    main()
