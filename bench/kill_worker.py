"""Worker-kill benchmark: the reliability suite's SIGKILL scenario at N changes (default 10,000).

Runs ``tests/reliability/test_worker_kill.py`` (real sandbox, real worker process started as
``sync-worker worker`` starts it, a private ``redis-server``, SQLite store) with
``SYNC_RELIABILITY_KILL_CHANGES=N`` and prints its figures: changes, events in flight and messages
unacknowledged at the kill, lost, written twice, and the seconds until the killed worker's messages
were redelivered (Dramatiq's Redis broker with the project's settings, :mod:`sync_worker.broker`).

    PYTHONPATH=. .venv/bin/python bench/kill_worker.py --changes 10000
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--changes", type=int, default=10_000)
    args = parser.parse_args(argv)
    print("command:", shlex.join([sys.executable, *sys.argv]), flush=True)
    env = {
        **os.environ,
        "SYNC_RELIABILITY_KILL_CHANGES": str(args.changes),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    command = [
        sys.executable,
        "-m",
        "pytest",
        "tests/reliability/test_worker_kill.py",
        "-q",
        "-p",
        "no:cacheprovider",
        "-o",
        "timeout=3600",
    ]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    for line in done.stdout.splitlines():
        if line.startswith(("worker SIGKILL", "FAILED", "E  ")) or " passed" in line or " failed" in line:
            print(line[:2000])
    return done.returncode


if __name__ == "__main__":
    raise SystemExit(main())
