#!/usr/bin/env python3
"""Runs a command and reports its wall time and the peak memory of the
largest process of its tree: scripts/bench.sh's stopwatch.

    peak_rss.py OUT COMMAND [ARG...]

Writes "WALL_SECONDS PEAK_MB" to OUT and exits with the command's status.

`/usr/bin/time`'s peak comes from getrusage, which sees a descendant only
once every process between it and the command has waited for it. weft's
task processes are children of its spawner, which the runtime kills at
shutdown without the command waiting for it, so their peaks went unseen
(19 MB reported for shard processes of 190 MB). So this reads every
descendant's own high-water mark (VmHWM in /proc/PID/status, which never
goes down) every 100 ms while the command runs (about 1.5% of one core
here); growth in a process's last 100 ms of life is the only thing it can
miss.
"""

import os
import subprocess
import sys
import time


def children_of():
    """Map of parent pid to child pids, read from /proc."""
    tree = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: split after it.
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def descendants(root):
    tree, found, todo = children_of(), [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(tree.get(pid, []))
    return found


def high_water_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def main():
    out, command = sys.argv[1], sys.argv[2:]
    started = time.perf_counter()
    child = subprocess.Popen(command)
    peak = 0
    while child.poll() is None:
        for pid in descendants(child.pid):
            peak = max(peak, high_water_kb(pid))
        time.sleep(0.1)
    wall = time.perf_counter() - started
    with open(out, "w") as f:
        f.write(f"{wall:.2f} {peak / 1024:.0f}\n")
    sys.exit(child.returncode)


if __name__ == "__main__":
    main()
