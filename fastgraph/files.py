"""Writing files so that a crash or a failed check never leaves a partial one."""

import os
import secrets
import tempfile
from pathlib import Path


def write_atomically(path, payload):
    """Write ``payload`` (bytes) to a temporary file beside ``path``, then rename it.

    The file gets the permissions of any new file (``0o666`` less the umask), or those of
    the file it replaces. Errors name ``path``, never the temporary file.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            mode = path.stat().st_mode & 0o7777
        except FileNotFoundError:
            mode = None
        temporary, handle = _create_beside(path)
    except OSError as error:
        raise OSError(f"{path}: cannot write ({error.strerror or error})") from None
    try:
        try:
            with os.fdopen(handle, "wb") as stream:
                stream.write(payload)
            if mode is not None:
                os.chmod(temporary, mode)
            os.replace(temporary, path)
        except OSError as error:
            raise OSError(f"{path}: cannot write ({error.strerror or error})") from None
    except BaseException:
        if temporary.exists():
            temporary.unlink()
        raise


def _create_beside(path):
    """A new file beside ``path`` opened for writing, created as ``open()`` creates files
    (mode 0o666 less the umask: ``mkstemp`` would make it 0o600 whatever the umask)."""
    for _ in range(100):
        temporary = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            return temporary, os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {path}")


def check_writable(path, option):
    """ValueError naming ``option`` unless a file can be written at ``path`` (the directories
    on the way may be missing: they are made when it is written). Checked before long work,
    so that its result is not lost at the end."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{option} {path}: is a directory, expected a file name")
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ValueError(f"{option} {path}: {ancestor} is not a directory")
    try:
        handle, probe = tempfile.mkstemp(dir=ancestor, prefix=".fastgraph-probe-")
    except OSError as error:
        raise ValueError(f"{option} {path}: cannot write in {ancestor} "
                         f"({error.strerror or error})") from None
    os.close(handle)
    os.unlink(probe)
    return path
