"""The MNIST loader on the real files, on damaged copies, and downloading from a local server."""

import contextlib
import functools
import gzip
import http.server
import re
import shutil
import threading
import time
import zlib

import numpy as np
import pytest

from fastgraph.datasets import mnist as dataset
from fastgraph.datasets.mnist import FILES, DatasetError


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """No $FASTGRAPH_DATA, and a cache directory of the test's own."""
    monkeypatch.delenv("FASTGRAPH_DATA", raising=False)
    monkeypatch.setenv("FASTGRAPH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@contextlib.contextmanager
def serving(handler):
    """A local HTTP server of ``handler`` in a thread; its address, without the last /."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def serve(directory):
    with serving(functools.partial(QuietHandler, directory=str(directory))) as url:
        yield url + "/"


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_real_files(mnist):
    x_train, y_train, x_test, y_test = mnist
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    assert x_train.dtype == y_train.dtype == np.uint8
    assert (y_train[:5] == [5, 0, 4, 1, 9]).all() and y_test[0] == 7
    assert np.bincount(y_test).tolist()[:3] == [980, 1135, 1032]
    features = dataset.features(x_test[:3])
    assert features.shape == (3, 784) and features.dtype == np.float32
    assert features.min() == 0.0 and features.max() == 1.0


def test_uncompressed_files_and_lookup_order(mnist_dir, isolated, tmp_path, monkeypatch):
    plain = tmp_path / "plain"
    plain.mkdir()
    for name in FILES:
        (plain / name).write_bytes(gzip.decompress((mnist_dir / f"{name}.gz").read_bytes()))
    assert dataset.find(plain) == plain
    monkeypatch.setenv("FASTGRAPH_DATA", str(mnist_dir))
    assert dataset.find(tmp_path / "empty") == mnist_dir  # path first, then $FASTGRAPH_DATA
    labels = dataset.load(plain, download=False)[3]
    assert labels.shape == (10000,)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda data: data[:-100], "truncated or corrupt"),
        (lambda data: data[:6], "truncated IDX header"),
        (lambda data: b"\x00\x00\x09\x03" + data[4:], "bad magic number"),
        (lambda data: data[:500] + bytes([data[500] ^ 0xFF]) + data[501:], "MD5"),
    ],
)
def test_damaged_files_give_a_clear_error(mnist_dir, isolated, tmp_path, damage, message):
    broken = tmp_path / "broken"
    shutil.copytree(mnist_dir, broken)
    target = broken / "t10k-labels-idx1-ubyte.gz"
    target.write_bytes(gzip.compress(damage(gzip.decompress(target.read_bytes()))))
    with pytest.raises(DatasetError, match=message) as caught:
        dataset.load(broken, download=False)
    assert "t10k-labels-idx1-ubyte" in str(caught.value)


def test_a_file_that_is_not_gzip_inside(mnist_dir, isolated, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(mnist_dir, broken)
    (broken / "t10k-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b" + b"garbage" * 10)
    with pytest.raises(DatasetError, match="cannot read"):
        dataset.load(broken, download=False)


def test_a_damaged_deflate_stream_gives_a_clear_error(mnist_dir, isolated, tmp_path):
    """A flipped byte inside the compressed data that zlib itself refuses (not the gzip
    checksum): it used to escape as a raw zlib.error."""
    broken = tmp_path / "broken"
    shutil.copytree(mnist_dir, broken)
    target = broken / "t10k-labels-idx1-ubyte.gz"
    raw = target.read_bytes()
    for position in range(20, len(raw)):
        damaged = raw[:position] + bytes([raw[position] ^ 0x55]) + raw[position + 1:]
        try:
            gzip.decompress(damaged)
        except zlib.error:
            break
        except (OSError, EOFError):
            continue
    else:
        pytest.fail("no byte of the file makes zlib refuse it")
    target.write_bytes(damaged)
    with pytest.raises(DatasetError, match=f"{target}: cannot read \\(Error -3"):
        dataset.load(broken, download=False)


def test_missing_files_say_where_they_were_looked_for(isolated, tmp_path):
    with pytest.raises(DatasetError) as caught:
        dataset.load(tmp_path / "nowhere", download=False)
    text = str(caught.value)
    assert str(tmp_path / "nowhere") in text and str(isolated) in text
    assert "FASTGRAPH_DATA" in text
    assert "load(path=...)" in text and "--data DIR" in text  # the API's way, the CLI's


def test_download_verifies_and_caches(mnist_dir, isolated):
    with serve(mnist_dir) as url:
        x_train, y_train, x_test, y_test = dataset.load(mirrors=[url])
    assert y_test[0] == 7 and x_train.shape == (60000, 28, 28)
    assert sorted(path.name for path in isolated.iterdir()) == sorted(f"{n}.gz" for n in FILES)
    assert dataset.find() == isolated  # the next load reads the cache


def test_a_bad_download_is_rejected_and_never_cached(mnist_dir, isolated, tmp_path):
    bad = tmp_path / "bad-mirror"
    shutil.copytree(mnist_dir, bad)
    labels = bad / "train-labels-idx1-ubyte.gz"
    data = bytearray(gzip.decompress(labels.read_bytes()))
    data[100] = (data[100] + 1) % 10  # one label changed: the header still parses
    labels.write_bytes(gzip.compress(bytes(data)))
    with serve(bad) as url, pytest.raises(DatasetError) as caught:
        dataset.load(mirrors=[url])
    assert "MD5" in str(caught.value) and "train-labels-idx1-ubyte.gz" in str(caught.value)
    assert not (isolated / "train-labels-idx1-ubyte.gz").exists()
    assert not any(path.name.startswith(".") for path in isolated.iterdir())  # no temp files
    with serve(bad) as bad_url, serve(mnist_dir) as good_url:  # falls back to the next mirror
        assert dataset.load(mirrors=[bad_url, good_url])[1][0] == 5


def test_no_network_error_is_clear(isolated):
    with pytest.raises(DatasetError, match="Downloading them failed"):
        dataset.load(mirrors=["http://127.0.0.1:9/"], timeout=2)


def test_one_hot_checks_labels():
    np.testing.assert_array_equal(dataset.one_hot([2, 0], 3), [[0, 0, 1], [1, 0, 0]])
    with pytest.raises(ValueError, match="integers in \\[0, 10\\)"):
        dataset.one_hot([10])


class Misbehaving(http.server.BaseHTTPRequestHandler):
    """Mirrors that fail as real servers do: a reply that trickles, one that is no HTTP,
    one cut short, one that never ends."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        kind = self.path.strip("/").split("/")[0]
        if kind == "garbage":
            self.wfile.write(b"this is not HTTP\r\n\r\n")
            return
        self.send_response(200)
        if kind != "huge":
            self.send_header("Content-Length", "100000")
        self.end_headers()
        try:
            if kind == "drip":  # a byte every 50 ms: no single read waits its timeout
                for _ in range(200):
                    self.wfile.write(b"\x1f")
                    self.wfile.flush()
                    time.sleep(0.05)
            elif kind == "truncated":
                self.wfile.write(b"\x1f\x8b" + b"0" * 10)
            elif kind == "huge":
                for _ in range(64):
                    self.wfile.write(b"0" * 4096)
        except OSError:  # the client gave up
            pass


def test_mirrors_that_trickle_are_no_http_cut_short_or_endless_are_passed_over(
        mnist_dir, isolated, monkeypatch):
    """A trickling server kept the download waiting forever (the timeout bounds each read),
    http.client's BadStatusLine and IncompleteRead (a reply cut short) escaped and the next
    mirror was never tried, and a reply was read whole into memory however large."""
    isolated.mkdir(parents=True)
    for name in FILES:  # only the train labels are missing
        if name != "train-labels-idx1-ubyte":
            shutil.copy(mnist_dir / f"{name}.gz", isolated)
    monkeypatch.setattr(dataset, "MAX_DOWNLOAD", 100000)
    with serving(Misbehaving) as bad, serve(mnist_dir) as good:
        mirrors = [f"{bad}/{kind}/" for kind in ("drip", "garbage", "truncated", "huge")]
        began = time.monotonic()
        with pytest.raises(DatasetError) as caught:
            dataset.load(mirrors=mirrors, timeout=0.2)
        assert time.monotonic() - began < 15
        message = str(caught.value)
        for kind, reason in [("drip", r"not all there after 2 s"),
                             ("garbage", r"BadStatusLine"),
                             ("truncated", r"the reply ended after 12 of the 100000 bytes"),
                             ("huge", r"more than 100000 bytes")]:
            assert re.search(rf"{kind}/train-labels-idx1-ubyte.gz: .*{reason}", message), kind
        assert dataset.load(mirrors=mirrors + [good], timeout=0.2)[1][0] == 5  # the next one


@pytest.mark.parametrize("timeout", [0, -1, "3", float("nan"), True])
def test_a_timeout_that_is_no_positive_number_is_refused(isolated, timeout):
    with pytest.raises(ValueError, match=r"^mnist: timeout must be a positive number of "):
        dataset.load(mirrors=["http://127.0.0.1:9/"], timeout=timeout)


def test_one_mirror_given_as_a_string_is_one_url(mnist_dir, isolated):
    """A string was taken as a list of one-character mirrors ("unknown url type: 'h/...'")."""
    with serve(mnist_dir) as url:
        assert dataset.load(mirrors=url)[1][0] == 5
