#!/usr/bin/env python3
"""Times whole processes in alternating runs (A, B, C, A, B, C, ...), so that a change in machine
load hits every command alike, which back-to-back runs (hyperfine's order) do not.

Each timed run records the wall time (spawn to exit) and the CPU time (user + sys, from wait4).
Peak RSS comes from separate alternating runs under /usr/bin/time: a child of this script
inherits the script's own RSS as a floor for its peak (Linux keeps the larger of the two across
exec), a grandchild started by the small `time` process does not. The report gives the median,
min-max and interquartile range, the medians relative to the first command, and the load average
before and after.

    alternate.py [--runs 7] [--warmup 1] [--rss-runs 3] [--title T] [--markdown FILE]
                 NAME=COMMAND [NAME=COMMAND ...]

COMMAND is split like a shell word list (no pipes or redirections); its standard output goes to
/dev/null. A command that exits non-zero aborts the benchmark. Standard library only.
"""
import argparse
import os
import shlex
import shutil
import statistics
import sys
import tempfile
import time

GNU_TIME = "/usr/bin/time"


def quartiles(xs):
    """(q1, median, q3) with the 'inclusive' method (defined for any non-empty list)."""
    if len(xs) == 1:
        return xs[0], xs[0], xs[0]
    q1, q2, q3 = statistics.quantiles(xs, n=4, method="inclusive")
    return q1, q2, q3


def spawn(argv):
    """Runs argv with standard output to /dev/null; returns (wall s, rusage)."""
    path = shutil.which(argv[0])
    if path is None:
        sys.exit(f"alternate.py: command not found: {argv[0]}")
    actions = [(os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0)]
    t0 = time.perf_counter()
    pid = os.posix_spawn(path, argv, os.environ, file_actions=actions)
    _, status, ru = os.wait4(pid, 0)
    wall = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        sys.exit(f"alternate.py: exit status {code}: {shlex.join(argv)}")
    return wall, ru


def timed_run(argv):
    """(wall s, user + sys CPU s) of one run."""
    wall, ru = spawn(argv)
    return wall, ru.ru_utime + ru.ru_stime


def peak_rss_kib(argv):
    """Peak resident set size of one run in KiB, measured by GNU time (None without it)."""
    if not os.access(GNU_TIME, os.X_OK):
        return None
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as f:
        spawn([GNU_TIME, "-f", "%M", "-o", f.name, *argv])
        return int(f.read().split()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=7, help="timed alternating rounds")
    ap.add_argument("--warmup", type=int, default=1, help="untimed alternating rounds first")
    ap.add_argument("--rss-runs", type=int, default=3, help="alternating rounds for peak RSS")
    ap.add_argument("--markdown", help="also append the table to this file")
    ap.add_argument("--title", default="", help="heading for the table")
    ap.add_argument("commands", nargs="+", metavar="NAME=COMMAND")
    args = ap.parse_args()
    if args.runs < 1:
        sys.exit("alternate.py: --runs must be at least 1")
    cmds = []
    for c in args.commands:
        name, sep, cmd = c.partition("=")
        if not sep or not cmd.strip():
            sys.exit(f"alternate.py: expected NAME=COMMAND, got {c!r}")
        cmds.append((name, shlex.split(cmd)))

    load0 = os.getloadavg()
    for _ in range(args.warmup):
        for _, argv in cmds:
            timed_run(argv)
    samples = {name: [] for name, _ in cmds}
    for _ in range(args.runs):
        for name, argv in cmds:
            samples[name].append(timed_run(argv))
    rss = {name: [] for name, _ in cmds}
    for _ in range(args.rss_runs):
        for name, argv in cmds:
            r = peak_rss_kib(argv)
            if r is not None:
                rss[name].append(r)
    load1 = os.getloadavg()

    rows = []
    base = None
    for name, _ in cmds:
        wall = sorted(s[0] for s in samples[name])
        cpu = sorted(s[1] for s in samples[name])
        wq, cq = quartiles(wall), quartiles(cpu)
        if base is None:
            base = (wq[1], cq[1])
        peak = f"{statistics.median(rss[name]) / 1024:.1f}" if rss[name] else "n/a"
        rows.append(
            f"| {name} | {1e3 * wq[1]:.1f} | {1e3 * wall[0]:.1f}–{1e3 * wall[-1]:.1f} "
            f"| {1e3 * wq[0]:.1f}–{1e3 * wq[2]:.1f} | {1e3 * cq[1]:.1f} "
            f"| {1e3 * cpu[0]:.1f}–{1e3 * cpu[-1]:.1f} | {peak} "
            f"| {wq[1] / base[0]:.2f}× | {cq[1] / base[1]:.2f}× |"
        )
    ncpu = os.cpu_count() or 1
    out = []
    if args.title:
        out.append(f"### {args.title}\n")
    out.append(
        f"{args.runs} alternating timed runs of each command after {args.warmup} warm-up "
        f"round(s), {args.rss_runs} more for peak RSS; load average {load0[0]:.2f} before, "
        f"{load1[0]:.2f} after, on {ncpu} CPUs."
    )
    if max(load0[0], load1[0]) > ncpu / 2:
        out.append(
            "The machine was loaded: wall times include waiting for a CPU, so compare the CPU "
            "times."
        )
    out.append("")
    out.append(
        "| command | wall median ms | wall min–max | wall IQR | CPU (user+sys) median ms "
        "| CPU min–max | peak RSS MiB | wall vs first | CPU vs first |"
    )
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    out.extend(rows)
    text = "\n".join(out) + "\n"
    print(text)
    if args.markdown:
        with open(args.markdown, "a", encoding="utf-8") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
