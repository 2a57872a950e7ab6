"""Publishing a running local stack's resource map (``ops/local_map.py`` defines and reads it).

``make serve`` writes the map to ``.devstack/resources.json`` in the checkout (gitignored) when
the stack is up and removes it when the stack stops cleanly; ``orders-ops`` and
``python -m devstack token`` read it, so neither needs flags or environment variables.

The file holds the local database owner's password and is written 0600, atomically (a
reader never sees half a map). It names the writing process: a map left by a killed stack is
recognised as stale by its readers, and the next ``make serve`` replaces it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ops.local_map import DEFAULT_PATH, LocalStackMap, find

Say = Callable[[str], None]

__all__ = ["DEFAULT_PATH", "published", "remove", "write"]


def write(path: Path, local: LocalStackMap) -> None:
    """Replace ``path`` with ``local`` in one step (a temporary file renamed over it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # mkstemp creates the file 0600: only this user reads the database password in it.
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(local.to_json())
            file.flush()
            os.fsync(file.fileno())
        Path(temporary).replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            Path(temporary).unlink()
        raise


def remove(path: Path, pid: int) -> bool:
    """Delete the map at ``path`` if process ``pid`` wrote it (another stack may own it now)."""
    found = find(path)
    if found.local is None or found.local.pid != pid:
        return False
    path.unlink(missing_ok=True)
    return True


@contextmanager
def published(path: Path, local: LocalStackMap, say: Say) -> Iterator[Path]:
    """The map at ``path`` while the block runs; removed at its end, however it ends."""
    before = find(path)
    if before.local is not None and before.local.pid != local.pid:
        say(
            f"replacing the resource map of another local stack still running (pid "
            f"{before.local.pid}): orders-ops now targets this one"
        )
    elif before.stale_pid is not None:
        say(f"replacing the stale resource map of process {before.stale_pid} (ended uncleanly)")
    elif before.note is not None:
        say(f"replacing an unreadable resource map ({before.note})")
    write(path, local)
    say(f"resource map for orders-ops written to {path}")
    try:
        yield path
    finally:
        remove(path, local.pid)
