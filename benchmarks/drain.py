"""Stands where journald or a container runtime would: reads a server's stdout and stderr.

    drain.py < pipe        # prints one JSON line at end of input: lines, bytes, the tail

run.py gives every server a pipe for its output, with this process (pinned beside the load
generator) reading it, so that a server writes its log as it would under systemd or in a
container, never into a terminal or /dev/null. It reads in large blocks and counts newlines,
so it keeps up with any server's log at a small fraction of a core; the count tells the
harness whether an access log said to be on wrote a line per request.
"""

from __future__ import annotations

import json
import sys

TAIL = 4000  # characters of the end of the output kept, for a failed server's message


def main() -> None:
    lines = size = 0
    tail = b""
    read = sys.stdin.buffer.raw.read  # type: ignore[attr-defined]
    while chunk := read(1 << 16):
        lines += chunk.count(b"\n")
        size += len(chunk)
        tail = (tail + chunk)[-TAIL:]
    print(json.dumps({"lines": lines, "bytes": size, "tail": tail.decode("utf-8", "replace")}), flush=True)


if __name__ == "__main__":
    main()
