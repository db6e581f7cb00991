"""Writing outputs safely: atomic replacement, writability checked before the work, and
operating-system failures (full disk, read-only folder) turned into one clear line.
See docs/failure-behaviour.md."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from fewshot_sparse.errors import OutputError

_REASONS = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
            errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
            errno.EPERM: "operation not permitted", errno.EFBIG: "file too large"}

WRITE_ERRNOS = frozenset(_REASONS)


def os_error(e: OSError, action: str, path=None) -> OutputError:
    """An OutputError of one line: what failed, where, and why."""
    where = path if path is not None else (e.filename or "")
    reason = _REASONS.get(e.errno) or (e.strerror or str(e) or type(e).__name__)
    return OutputError(f"{action} {where}: {reason}".replace("  ", " "))


def check_writable(folder) -> Path:
    """Create ``folder`` if needed and check that a file can be created in it, before
    any work is done; OutputError naming the folder otherwise."""
    folder = Path(folder).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-check-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise os_error(e, "cannot write to", folder) from None
    return folder


def atomic_write_bytes(path, data) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and
    ``os.replace``: readers see the old file or the new one, never half of one; on a
    full disk the old file stays and the temporary is removed (OutputError). The file
    gets the usual permissions (0666 less the umask)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise os_error(e, "cannot write", path) from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def atomic_write_text(path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def refuse_other_settings(path, old, new: dict, what: str, overwrite: bool) -> None:
    """Refuse to replace the result at ``path`` (``old``: its settings; {} when there is
    none, None when what is there is not a result of this project) with one of other
    settings ``new``, unless ``overwrite``. Same settings: a rerun, replaced silently."""
    if overwrite or old == {}:
        return
    if old is None:
        raise OutputError(f"{path}: exists and is not {what} written by fewshot-sparse; "
                          f"refusing to overwrite it (pass --overwrite or choose another "
                          f"--out)")
    differ = [k for k in new if old.get(k) != new[k]]
    if differ:
        raise OutputError(f"{path}: holds {what} with other settings ("
                          + ", ".join(f"{k} {old.get(k)!r} vs {new[k]!r}" for k in differ)[:300]
                          + "); pass --overwrite to replace it or choose another --out")
