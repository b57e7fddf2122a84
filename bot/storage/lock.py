"""One bot per data dir: the running bot holds an exclusive lock on `<data_dir>/bot.lock`.

Operations that must not run beside it (rotating the bot's secrets, restoring a backup) take
the same lock, and say plainly that the bot must be stopped first.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from bot.errors import BotRunningError, StorageError

LOCK_NAME = "bot.lock"


@contextlib.contextmanager
def data_dir_lock(data_dir: Path, purpose: str) -> Iterator[None]:
    """Hold the data dir's lock; BotRunningError at once if another process holds it."""
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(data_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        raise StorageError(f"cannot create the lock file in {data_dir}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BotRunningError(
                f"another safeguard process is using {data_dir}; stop it before {purpose}"
            ) from None
        yield
    finally:
        os.close(fd)  # closing releases the lock
