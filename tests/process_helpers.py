"""Helpers for tests that interrupt a real child process (importable from every test folder)."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path


def kill_once_file_exists(child: subprocess.Popen, path: Path, timeout_s: float = 60.0) -> None:
    """SIGKILL `child` as soon as `path` exists (or it exited, or `timeout_s` passed), then reap it.

    The caller asserts what it expects of `path` afterwards: a child that finished or timed out
    before writing it shows up there, not as a hang."""
    deadline = time.monotonic() + timeout_s
    while not path.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    child.send_signal(signal.SIGKILL)
    child.wait()
