"""Writing files so that a crash or a failed check never leaves a partial one."""

import os
import tempfile
from pathlib import Path


def write_atomically(path, payload):
    """Write ``payload`` (bytes) to a temporary file beside ``path``, then rename it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(payload)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
