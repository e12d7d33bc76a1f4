"""Runs the installed ``chatbase-bridge`` console script as a real process, asynchronously
(so fake servers in the test's event loop keep answering it)."""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass
from pathlib import Path

# The console script pyproject declares, as pip installed it next to this interpreter.
CLI = Path(sys.executable).with_name("chatbase-bridge")


@dataclass(frozen=True)
class Done:
    status: int
    out: str
    err: str

    @property
    def lines(self) -> list[str]:
        return self.out.splitlines()

    def line(self, name: str) -> str:
        [found] = [line for line in self.lines if line.split(" ", 1)[0] == name]
        return found


def bare_env(home: Path, **values: str) -> dict[str, str]:
    """An environment with nothing but PATH, HOME and ``values``."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), **values}


async def start(*args: str, env: dict[str, str], cwd: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        str(CLI), *args, env=env, cwd=cwd,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )


# Generous for a loaded CI machine; a healthy run takes about a second.
LIMIT = 60.0


async def run_cli(*args: str, env: dict[str, str], cwd: Path) -> Done:
    proc = await start(*args, env=env, cwd=cwd)
    try:
        async with asyncio.timeout(LIMIT):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return Done(proc.returncode, out.decode(), err.decode())
