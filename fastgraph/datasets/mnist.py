"""MNIST: read the four IDX files, find them, or download and verify them.

``load()`` returns ``(x_train, y_train, x_test, y_test)``: images as ``uint8`` arrays of shape
``(N, 28, 28)`` (0 is background), labels as ``uint8`` arrays of shape ``(N,)``.
``features(images)`` scales them to floats in [0, 1] as ``(N, 784)`` rows, and
``one_hot(labels)`` makes the ``(N, 10)`` targets the article's network takes.

Where the files are looked for, in order: the ``path`` argument, the directory in
``$FASTGRAPH_DATA``, and the cache directory (``$FASTGRAPH_CACHE`` or
``~/.cache/fastgraph/mnist``). Each file may be gzipped (``name.gz``) or not. When none of
those holds them, they are downloaded from the mirrors into the cache; every file is
checked against the published MD5 of its decompressed bytes, written atomically, and a file
that fails the check is never kept.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import io
import math
import numbers
import os
import zlib
from pathlib import Path

import numpy as np

from ..files import open_regular, write_atomically

FILES = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
_IDX_TYPES = {0x08: np.uint8}
#: The most bytes an IDX file may decompress to (MNIST's largest is 47 MB): a small gzip
#: file that inflates to gigabytes is refused instead of filling the memory.
MAX_IDX_BYTES = 2**30


class DatasetError(Exception):
    """A dataset file is missing, truncated or not what it should be."""


def cache_dir():
    return Path(os.environ.get("FASTGRAPH_CACHE") or Path.home() / ".cache" / "fastgraph" / "mnist")


#: What ``Path.is_file`` takes as "no such file" (it raises the others).
_ABSENT = (errno.ENOENT, errno.ENOTDIR, errno.EBADF, errno.ELOOP)


def _check_place(place, named):
    """A place to look in that gives an error other than "no such file" (a name too long, a
    folder not searchable) is a DatasetError naming where it came from (``named``: the
    variable), not an OSError naming a path of thousands of characters."""
    try:
        os.stat(place)
    except OSError as error:
        if error.errno not in _ABSENT:
            text = str(place)
            shown = text if len(text) <= 80 else f"{text[:60]}... ({len(text):,} characters)"
            raise DatasetError(f"{named} does not name a directory that can be looked in: "
                               f"{error.strerror} ({shown})") from None
    return place


def _places(path):
    """``(place, what names it)``, in the order they are looked in."""
    if path is not None:
        yield Path(path), "the path given"
    if os.environ.get("FASTGRAPH_DATA"):
        yield Path(os.environ["FASTGRAPH_DATA"]), "$FASTGRAPH_DATA"
    yield cache_dir(), _cache_named()


def _cache_named():
    return "$FASTGRAPH_CACHE" if os.environ.get("FASTGRAPH_CACHE") else "the cache directory"


def load(path=None, *, download=True, mirrors=None, timeout=30):
    """``(x_train, y_train, x_test, y_test)`` as uint8 arrays (see the module docstring)."""
    directory = find(path)
    if directory is None:
        searched = _candidates(path)
        if not download:
            raise DatasetError(_missing_message(searched))
        directory = fetch(mirrors=mirrors, timeout=timeout, searched=searched)
    # Each file is checked against its published MD5, so the four agree in shape.
    x_train, y_train, x_test, y_test = [read_idx(_file_in(directory, name), FILES[name])
                                        for name in FILES]
    return x_train, y_train, x_test, y_test


def features(images, dtype=np.float32):
    """Images as ``(N, 784)`` rows of floats in [0, 1]; ``dtype`` float32 (the default) or
    float64, what the models take."""
    try:
        chosen = np.dtype(dtype)
    except TypeError:  # ("data type 'foo' not understood", not naming the option)
        chosen = None
    if chosen not in (np.float32, np.float64):  # integers would round every pixel but white to 0
        given = repr(dtype) if chosen is None else chosen
        raise ValueError(f"features: dtype must be a float type, got {given} (float32 or "
                         "float64)")
    images = np.asarray(images)
    if images.ndim < 2 or not len(images) or images.dtype.kind not in "biuf":
        raise ValueError(f"features: expected images (N, rows, cols) or rows (N, pixels) of "
                         f"numbers, got {images.dtype} {images.shape}")
    return (images.reshape(len(images), -1) / np.float32(255)).astype(dtype)


def one_hot(labels, classes=10, dtype=np.float32):
    """Integer labels as ``(N, classes)`` one-hot rows."""
    if isinstance(classes, bool) or not isinstance(classes, numbers.Integral) or classes < 1:
        raise ValueError(f"one_hot: classes must be a positive integer, got {classes!r}")
    labels = np.asarray(labels)
    if (labels.ndim != 1 or labels.size and not np.issubdtype(labels.dtype, np.integer)
            or labels.size and (labels.min() < 0 or labels.max() >= classes)):
        raise ValueError(f"labels must be a vector of integers in [0, {classes})")
    rows = np.zeros((len(labels), classes), dtype)  # N x classes (np.eye: classes squared)
    rows[np.arange(len(labels)), labels] = 1
    return rows


# -- finding files ----------------------------------------------------------------------------
def _candidates(path):
    return [place for place, _ in _places(path)]


def find(path=None):
    """The first place, in the documented order, that holds all four files (or None)."""
    for place, named in _places(path):  # (each checked only when it is looked in)
        if all(_file_in(_check_place(place, named), name) is not None for name in FILES):
            return place
    return None


def missing(directory):
    """The names of the four files that ``directory`` does not hold (gzipped or not)."""
    return [name for name in FILES if _file_in(directory, name) is None]


def _file_in(directory, name):
    for candidate in (Path(directory) / name, Path(directory) / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _missing_message(searched):
    places = "\n".join(f"  - {place}" for place in searched)
    names = ", ".join(FILES)
    return (
        f"the MNIST files ({names}, gzipped or not) were not found in:\n{places}\n"
        "Put them in one of these directories, pass load(path=...) (`fastgraph train "
        "--data DIR` on the command line), or set FASTGRAPH_DATA."
    )


# -- reading ----------------------------------------------------------------------------------
def read_idx(path, md5=None):
    """An IDX file (gzipped or not) as an array, checked against ``md5`` of its bytes."""
    path = Path(path)
    try:
        with open_regular(path) as stream:
            raw = stream.read()
        data = _gunzip(raw, path) if raw[:2] == b"\x1f\x8b" else raw
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as error:  # zlib: a bad block
        raise DatasetError(f"{path}: cannot read ({error})") from error
    return parse_idx(data, path, md5)


def _gunzip(raw, source):
    with gzip.GzipFile(fileobj=io.BytesIO(raw)) as stream:
        data = stream.read(MAX_IDX_BYTES + 1)
    if len(data) > MAX_IDX_BYTES:
        raise DatasetError(f"{source}: decompresses to more than {MAX_IDX_BYTES} bytes: "
                           "not an MNIST file")
    return data


def parse_idx(data, source="<bytes>", md5=None):
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES:
        raise DatasetError(f"{source}: not an IDX file of unsigned bytes (bad magic number)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise DatasetError(f"{source}: truncated IDX header")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + math.prod(shape)  # Python ints: np.prod could overflow and wrap
    if len(data) != expected:
        raise DatasetError(
            f"{source}: the header announces shape {shape} ({expected} bytes) but the file "
            f"has {len(data)} bytes: truncated or corrupt"
        )
    if md5 is not None and hashlib.md5(data).hexdigest() != md5:
        raise DatasetError(f"{source}: MD5 of the decompressed bytes is not {md5}: corrupt file")
    return np.frombuffer(data, np.uint8, offset=header).reshape(shape)


# -- downloading ------------------------------------------------------------------------------
#: The most bytes a download of one file may bring (MNIST's largest, gzipped, is 9.9 MB).
MAX_DOWNLOAD = 2**26

#: A file must arrive within this many times ``timeout`` (which bounds each read): a server
#: that sends a byte now and then is given up on, not waited on forever.
DEADLINE_TIMEOUTS = 10


def fetch(mirrors=None, timeout=30, searched=()):
    """Download the four files into the cache directory, verified; return the directory.
    ``mirrors``: a list of base URLs (or one); ``timeout``: seconds each read may wait, a
    file at most ``DEADLINE_TIMEOUTS`` times that, and ``MAX_DOWNLOAD`` bytes."""
    import http.client  # here: reading MNIST, and importing fastgraph, need no http client
    import urllib.error
    import urllib.request

    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) \
            or not 0 < timeout < float("inf"):
        raise ValueError(f"mnist: timeout must be a positive number of seconds, got "
                         f"{timeout!r}")
    if isinstance(mirrors, (str, bytes)):
        mirrors = [mirrors]  # one URL, not its characters
    target = _check_place(cache_dir(), _cache_named())
    mirrors = list(mirrors or os.environ.get("FASTGRAPH_MNIST_MIRRORS", "").split() or MIRRORS)
    failures = []
    for name, md5 in FILES.items():
        if _file_in(target, name) is not None:
            continue
        for mirror in mirrors:
            url = f"{mirror.rstrip('/')}/{name}.gz"
            try:
                payload = _download(urllib.request, url, timeout)
                parse_idx(_gunzip(payload, url), url, md5)
            except (OSError, EOFError, zlib.error, urllib.error.URLError, DatasetError,
                    http.client.HTTPException, ValueError) as error:  # ValueError: a bad URL
                failures.append(f"  - {url}: {type(error).__name__}: {error}")
                continue
            write_atomically(target / f"{name}.gz", payload)
            break
        else:
            raise DatasetError(
                _missing_message(searched or [target])
                + "\nDownloading them failed:\n"
                + "\n".join(failures)
            )
    return target


def _download(request, url, timeout):
    """The bytes at ``url``: each read waits at most ``timeout`` seconds, the whole at most
    ``DEADLINE_TIMEOUTS`` times that, and no more than ``MAX_DOWNLOAD`` bytes are taken."""
    import time

    deadline = time.monotonic() + DEADLINE_TIMEOUTS * timeout
    chunks, size = [], 0
    with request.urlopen(url, timeout=timeout) as response:
        while True:
            chunk = response.read1(2**16)
            if not chunk:
                left = getattr(response, "length", None)  # what the announced length still wants
                if left:
                    raise DatasetError(f"the reply ended after {size} of the {size + left} "
                                       "bytes it announced")
                return b"".join(chunks)
            size += len(chunk)
            if size > MAX_DOWNLOAD:
                raise DatasetError(f"more than {MAX_DOWNLOAD} bytes: not an MNIST file")
            if time.monotonic() > deadline:
                raise DatasetError(f"not all there after {DEADLINE_TIMEOUTS * timeout:g} s "
                                   f"({size} bytes so far)")
            chunks.append(chunk)

