"""Writing files so that an interrupted run never leaves a half-written file where a good one was, never
writes over something it did not make, and reports a failed write (a full disk, a read-only folder) in
one line."""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from seqgen.errors import SeqgenError


class CannotWrite(SeqgenError, OSError):
    """A file could not be written (no space, no permission, not a regular file); one line naming it."""


_FIXES = {errno.ENOSPC: "free some space or write elsewhere", errno.EDQUOT: "free some space or write elsewhere",
          errno.EACCES: "write to a folder you may write to", errno.EPERM: "write to a folder you may write to",
          errno.EROFS: "write to a folder on a writable disk"}


@contextlib.contextmanager
def reported(path: Path) -> Iterator[None]:
    """Turn an OSError raised while writing `path` into one CannotWrite line naming the file and a fix."""
    try:
        yield
    except CannotWrite:
        raise
    except OSError as exc:
        fix = _FIXES.get(exc.errno or 0, "check the path and the disk")
        raise CannotWrite(exc.errno, f"cannot write {path}: {exc.strerror or exc}; {fix}") from None


def atomic_write(path: str | Path, data: bytes, *, replaces: Callable[[Path], bool] | None = None,
                 what: str = "file") -> None:
    """Write `data` to a temporary file beside `path`, flush it to disk, then rename it over `path`.

    An existing `path` that is not a regular file (a folder, a device such as /dev/full, a FIFO) is never
    replaced, nor one that `replaces` does not accept as a `what` this program made. Temporary files that
    a killed earlier write of the same path left behind are removed first (one writer per file is assumed:
    a run writes its own files).
    """
    path = Path(path)
    with reported(path):
        check_replaceable(path, replaces, what)
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
            stale.unlink(missing_ok=True)
        try:  # mkstemp makes the file private (0600); give it the mode an ordinary new file (or the old one) has
            mode = path.stat().st_mode & 0o777
        except OSError:
            mode = 0o666 & ~_umask()
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            os.fchmod(fd, mode)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def check_replaceable(path: Path, replaces: Callable[[Path], bool] | None = None, what: str = "file") -> None:
    """Refuse, before anything is written, to replace what is not a regular file, or (with `replaces`) a
    file that is not a `what`: a command never destroys work it did not create."""
    if not os.path.lexists(path):
        return
    if not path.is_file():
        raise CannotWrite(errno.EEXIST, f"{path} exists and is not a regular file, so it is not replaced; "
                                        f"give the path of a new {what}")
    if replaces is not None and not replaces(path):
        raise CannotWrite(errno.EEXIST, f"{path} exists and is not a {what}, so it is not replaced; remove it "
                                        f"yourself or choose another path")


def append_line(path: Path, line: str) -> None:
    """Append one line to a log (a crash mid-append tears at most this line; read_jsonl skips it)."""
    with reported(path), open(path, "a", encoding="utf-8") as handle:
        handle.write(line + "\n")


def read_jsonl(path: Path) -> list[tuple[str, dict[str, object]]]:
    """(line, record) for each line of a JSON-lines file that parses to an object; a line torn by a
    crash mid-append is skipped."""
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            rows.append((line, record))
    return rows


def _umask() -> int:
    """The process's umask (read by setting it, so set it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
