"""Files only the vault's own user may read: key files, CA keys, backup archives, the audit anchor."""

from __future__ import annotations

import os


def create_private(path: str | os.PathLike) -> int:
    """A new, empty file at `path`, mode 0600, opened for writing: its descriptor. A file already
    there is removed first, since opening it with O_CREAT would keep that file's mode."""
    if os.path.lexists(path):
        os.unlink(path)
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
