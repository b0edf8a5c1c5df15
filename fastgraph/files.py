"""Writing files so that a crash or a failed check never leaves a partial one, and only
over a regular file; reading only from a regular file (a FIFO is never waited on, a device
never read or replaced)."""

import contextlib
import errno
import os
import secrets
import signal
import stat
import tempfile
import threading
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - not a POSIX system
    fcntl = None

#: What an existing path that is not a regular file is, for the errors that refuse it.
_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"))


def not_regular(mode):
    """What a file of ``st_mode`` ``mode`` is when it is not a regular file ("a FIFO (named
    pipe)", "a character device", ...), or None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    return next((kind for test, kind in _KINDS if test(mode)), "not a regular file")


def open_regular(path):
    """``path`` opened for reading in binary, if it is a regular file (through symlinks);
    OSError otherwise. Opened without blocking, so that a FIFO with no writer is refused
    rather than waited on forever (and a device is never read)."""
    handle = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        kind = not_regular(os.fstat(handle).st_mode)
        if kind is not None:
            raise OSError(f"it is {kind}, not a regular file")
        os.set_blocking(handle, True)
        return os.fdopen(handle, "rb")
    except BaseException:
        os.close(handle)
        raise


def write_atomically(path, payload):
    """Write ``payload`` (bytes) to a temporary file beside ``path``, then rename it.

    The temporary file is flushed and ``fsync``-ed before it replaces ``path``, and the
    folder is ``fsync``-ed after, so that a power loss leaves the old file or the new one,
    never an empty one. The file gets the permissions of any new file (``0o666`` less the
    umask), or those of the file it replaces. Errors name ``path``, never the temporary
    file; on an error the old file is kept and no temporary is left.
    """
    write_atomically_together([(path, payload)])


def write_atomically_together(files):
    """Write several files, ``[(path, payload), ...]``, as :func:`write_atomically` does one.

    Every file is first written in full to a temporary file beside its path (flushed and
    ``fsync``-ed); only when all of them are written are they renamed into place, in the
    order given, and their folders ``fsync``-ed. An error while writing leaves every old file
    as it was and no temporary behind. A rename that fails after an earlier one succeeded (a
    crash there, or a folder that refuses it) leaves the earlier files new and the later
    ones old: the caller records in the last file what the others hold, to notice it.
    A Ctrl-C (SIGINT) during the renames waits until they and the folders' ``fsync`` are
    done: its KeyboardInterrupt is raised then, with every file new (a Ctrl-C between two
    renames left a pair of an old and a new file).
    """
    files = [(Path(path), payload) for path, payload in files]
    targets = [os.path.abspath(path) for path, _ in files]
    if len(set(targets)) != len(targets):
        raise ValueError(f"cannot write {', '.join(map(str, targets))}: a file is named twice")
    written = []  # (temporary, path)
    try:
        for path, payload in files:
            written.append((_write_beside(path, payload), path))
        # (the lock first: a Ctrl-C while it waits for another save stops this one)
        with folders_locked(path.parent for _, path in written), interrupts_deferred():
            replaced = []
            for temporary, path in written:
                try:
                    os.replace(temporary, path)
                except OSError as error:
                    done = "".join(f"; {name} was replaced already" for name in replaced)
                    raise OSError(f"{path}: cannot write ({error.strerror or error}){done}") \
                        from None
                replaced.append(path)
            for folder in dict.fromkeys(path.parent for path, _ in files):
                _sync_folder(folder)
    except BaseException:
        for temporary, _ in written:
            if temporary.exists():
                temporary.unlink()
        raise


#: Held, with the folders' ``flock``, by the renames of files written together (see
#: :func:`folders_locked`).
_renaming = threading.Lock()
#: The folders' handles that this process holds locked now.
_held = set()


def _forked():
    """In a child just forked: another thread's save that held the folders at the fork
    never ends here, so the child takes a new lock and closes its copies of the handles
    (a copy kept would hold the parent's ``flock`` until the child ended: the parent's next
    save waited for it)."""
    global _renaming
    _renaming = threading.Lock()
    for handle in list(_held):
        with contextlib.suppress(OSError):
            os.close(handle)
    _held.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forked)


@contextlib.contextmanager
def folders_locked(folders, shared=False):
    """Hold ``folders`` (paths) against files written together in them by another thread or
    process: exclusively around the renames of :func:`write_atomically_together`, shared
    (``shared=True``) around reading such files, so that two saves of a pair into one folder
    at once leave one save's pair whole (the renames interleaved: each file from another
    save, and neither loaded) and a reader sees a pair from one save. A lock of this process
    and ``flock`` on each folder (a directory can be locked: no lock file is left); a folder
    that cannot be opened or locked (no ``fcntl``, a filesystem without locks) is only held
    against this process's threads."""
    handles = []

    def close():
        for handle in handles:
            _held.discard(handle)
            os.close(handle)

    with contextlib.ExitStack() as stack:
        if not shared:
            stack.enter_context(_renaming)
        stack.callback(close)
        opened = {}  # (device, inode) -> handle: a folder reached by two names (a symbolic
        for folder in folders:  # link) is locked once, or the save waited on itself
            try:
                handle = os.open(folder, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue
            handles.append(handle)
            _held.add(handle)
            status = os.fstat(handle)
            opened.setdefault((status.st_dev, status.st_ino), handle)
        for _, handle in sorted(opened.items()):  # one order in every process: no deadlock
            if fcntl is not None:
                try:
                    fcntl.flock(handle, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
                except OSError:  # a filesystem without locks: this process's threads only
                    continue
        yield


@contextlib.contextmanager
def interrupts_deferred():
    """Run the block whole: a Ctrl-C (SIGINT) received meanwhile is delivered again, to the
    handler that was in place, once the block is done. Python runs SIGINT's handler (by
    default: raise KeyboardInterrupt) in the main thread only, so only there is the handler
    swapped; elsewhere the block runs as it is. (Masking SIGINT with ``pthread_sigmask``
    would not do: the kernel hands a process's signal to another thread that does not mask
    it, a Numba or BLAS worker, and Python still raises in the main thread.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    if previous is None:  # a handler not installed from Python: it could not be put back
        yield
        return
    received = []
    signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            signal.raise_signal(signal.SIGINT)


def _write_beside(path, payload):
    """A temporary file beside ``path`` holding ``payload``, on disk; OSError naming ``path``
    (and no temporary left) if it cannot be written or ``path`` is a directory, a FIFO, a
    device or a socket (which the rename would replace with a file)."""
    made = []  # the temporary, named before it is made: a Ctrl-C as it is made leaves none
    try:
        return _write_new_beside(path, payload, made)
    except BaseException:
        for temporary in made:
            if temporary.exists():
                temporary.unlink()
        raise


def _write_new_beside(path, payload, made):
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            mode = path.stat().st_mode
        except FileNotFoundError:  # (a symlink to nothing is replaced)
            mode = None
        if path.is_dir() and not path.is_symlink():  # os.replace would refuse it at the end
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
        kind = None if mode is None else not_regular(mode)
        if kind is not None:  # a device or FIFO would be replaced by a file (/dev/null!)
            raise OSError(errno.EINVAL, f"it is {kind}; only a regular file is replaced")
        mode = None if mode is None else mode & 0o7777
        temporary, handle = _create_beside(path, made)
    except OSError as error:
        raise OSError(f"{path}: cannot write ({error.strerror or error})") from None
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(payload)
            stream.flush()
            os.fsync(stream.fileno())
        if mode is not None:
            os.chmod(temporary, mode)
    except OSError as error:
        raise OSError(f"{path}: cannot write ({error.strerror or error})") from None
    return temporary


def _sync_folder(folder):
    """``fsync`` a folder, so that the renames in it survive a power loss; filesystems (and
    systems) that refuse to open or sync a folder are left as they are."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def _create_beside(path, made):
    """A new file beside ``path`` opened for writing, created as ``open()`` creates files
    (mode 0o666 less the umask: ``mkstemp`` would make it 0o600 whatever the umask); its
    name is put in ``made`` before it is created."""
    for _ in range(100):
        temporary = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        made.append(temporary)
        try:
            return temporary, os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:  # another's file: not to be removed
            made.pop()
            continue
    raise FileExistsError(f"no free temporary name beside {path}")


def check_file_name(name, what):
    """ValueError naming ``what`` (``"<where>: <option>"``) for a name no file can have: one
    with a NUL character (the system's calls refuse it, "embedded null byte", naming nothing),
    or one that names a folder, ending in a separator or in ``.`` or ``..``. ``Path`` drops a
    trailing ``/`` or ``/.``: ``save("/tmp/x/.", graph)`` replaced a file ``/tmp/x``."""
    text = os.fspath(name)
    if "\x00" in text:
        raise ValueError(f"{what} {text!r} has a NUL character, which no file name can hold")
    separators = tuple(sep for sep in (os.sep, os.altsep) if sep)
    if text.endswith(separators) or os.path.basename(text) in (".", ".."):
        raise ValueError(f"{what} {text!r} names a folder, not a file: expected a file name")


def check_writable(path, option):
    """ValueError naming ``option`` unless a file can be written at ``path`` (the directories
    on the way may be missing: they are made when it is written). Checked before long work,
    so that its result is not lost at the end."""
    check_file_name(path, option)
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{option} {path}: is a directory, expected a file name")
    try:
        kind = not_regular(path.stat().st_mode)
    except OSError:  # not there yet (or a symlink to nothing): it will be made
        kind = None
    if kind is not None:
        raise ValueError(f"{option} {path}: is {kind}, expected a regular file name (it would "
                         "be replaced by the file written)")
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
