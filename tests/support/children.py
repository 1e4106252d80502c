"""Child processes of the tests: a program, or the `giftstream` command line, run to its end with
a deadline, in this environment without its GIFTSTREAM_* variables (a test says what it sets)."""

import asyncio
import os
import sys
from collections.abc import Sequence

# How long one child may run (an audit reads a whole store).
CHILD_TIMEOUT_S = 120.0


async def run_child(
    argv: Sequence[str],
    env: dict[str, str] | None = None,
    timeout_s: float = CHILD_TIMEOUT_S,
    apart: bool = False,
) -> tuple[int, str, str]:
    """`argv` in a child process (with `env` added): its exit code, its output and its error
    output; without `apart`, the error output is in the output, in order, and the third is
    empty. Killed at the deadline."""
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("GIFTSTREAM_")}
    child_env.update(env or {})
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE if apart else asyncio.subprocess.STDOUT,
        env=child_env,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace"), (err or b"").decode(errors="replace")


async def giftstream_cli(*args: str, apart: bool = False) -> tuple[int, str, str]:
    """`giftstream ARGS` in a child process, as `run_child` runs it."""
    return await run_child([sys.executable, "-m", "giftstream.cli", *args], apart=apart)
