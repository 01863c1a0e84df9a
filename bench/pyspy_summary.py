"""Summarises py-spy's raw (collapsed) stacks, as written by
`bench/delivery.py --py-spy DIR`: where the server's busy samples are, by
frame (self and inclusive) and by owner (our code, aiohttp, asyncpg, and
the C under the event loop: uvloop, the HTTP parser, asyncpg's protocol,
system calls).

    python bench/pyspy_summary.py DIR/throughput-*.txt [--top 30]

Frames are counted by function, whatever the line. With uvloop, C code has
no Python frame of its own: its samples land on the frame that called into
it, mostly the worker's run() (the loop itself). In the pinned mode the
server and PostgreSQL share a core, so a system call that wakes PostgreSQL
(a query written to its socket) is sampled as busy while PostgreSQL runs:
asyncpg's _do_execute looks dearer here than the server's CPU time says.
"""

from __future__ import annotations

import argparse
import collections
import re
from pathlib import Path

LINE = re.compile(r":\d+\)")
OWNER = re.compile(r"\(([^/)]+)/")


def owner(frame: str) -> str:
    if "aiohttp/worker.py" in frame:
        return "C under the loop (uvloop, parsers, asyncpg protocol, syscalls)"
    match = OWNER.search(frame)
    return match.group(1) if match else "other"


def summarise(paths: list[Path], top: int) -> str:
    self_counts: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    owners: collections.Counter[str] = collections.Counter()
    total = 0
    for path in paths:
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            n = int(count)
            frames = [LINE.sub(")", frame) for frame in stack.split(";")]
            total += n
            self_counts[frames[-1]] += n
            owners[owner(frames[-1])] += n
            for frame in set(frames):
                inclusive[frame] += n
    if not total:
        return "no samples"

    def table(counter: collections.Counter[str]) -> list[str]:
        return [f"{n / total * 100:5.1f}%  {name}" for name, n in counter.most_common(top)]

    return "\n".join(
        [
            f"{total} busy samples in {len(paths)} file(s)",
            "-- by owner (self time)",
            *table(owners),
            "-- self",
            *table(self_counts),
            "-- inclusive",
            *table(inclusive),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    print(summarise(args.paths, args.top))


if __name__ == "__main__":
    main()
