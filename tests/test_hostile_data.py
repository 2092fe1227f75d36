"""Downloaded dataset files that pass their (here: test-made) checksum but are hostile inside:
gzip bombs, IDX headers that lie, oversized CIFAR-10 members. Each is refused with a clear
``ValueError`` before a large allocation (the real files are also SHA-256 pinned)."""

# ruff: noqa: F811  (the fixtures imported from test_data are parameters here)
from __future__ import annotations

import errno
import gzip
import hashlib
import io
import re
import tarfile
import time
import tracemalloc
import zlib

import numpy as np
import pytest
from test_data import _idx, _isolated, _registry, fake_mnist, server, set_spec  # noqa: F401

from ttqlab import data

LABELS = "train-labels-idx1-ubyte.gz"
IMAGES = "train-images-idx3-ubyte.gz"


def _gzip_stream(header: bytes, zeros: int) -> bytes:
    """A gzip file of ``header`` followed by ``zeros`` zero bytes, compressed in pieces (a few
    hundred kB on disk for hundreds of MB inflated)."""
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=6, mtime=0) as f:
        f.write(header)
        chunk = bytes(1 << 20)
        for _ in range(zeros >> 20):
            f.write(chunk)
    return out.getvalue()


def _plant(fake, name: str, blob: bytes, monkeypatch) -> None:
    """Serve ``blob`` as ``name`` with a matching checksum, as a compromised registry would."""
    path = fake.server.root / "mnist" / name
    path.write_bytes(blob)
    set_spec(monkeypatch, "mnist", files=_registry(path.parent))


def _load_measured(tmp_path):
    """``load("mnist")``'s ValueError, with its peak traced memory in bytes and seconds taken."""
    tracemalloc.start()
    start = time.monotonic()
    try:
        with pytest.raises(ValueError) as e:
            data.load("mnist", root=tmp_path)
        return e.value, tracemalloc.get_traced_memory()[1], time.monotonic() - start
    finally:
        tracemalloc.stop()


def test_gzip_bomb_is_refused_with_bounded_memory(fake_mnist, monkeypatch, tmp_path):
    """A labels file whose header says 20 labels, then 256 MiB of zeros: only the announced
    20 bytes (and one more) are inflated."""
    bomb = _gzip_stream(b"\x00\x00\x08\x01" + (20).to_bytes(4, "big") + bytes(20), 256 << 20)
    assert len(bomb) < 1 << 20
    _plant(fake_mnist, LABELS, bomb, monkeypatch)
    error, peak, took = _load_measured(tmp_path)
    assert str(error).endswith("IDX header says shape (20,) (20 bytes) but the file has more "
                               "than 20 data bytes")
    assert peak < 32 << 20, f"peak {peak >> 20} MiB"
    assert took < 10


def test_header_announcing_billions_of_images_is_refused_before_allocating(
        fake_mnist, monkeypatch, tmp_path):
    huge = b"\x00\x00\x08\x03" + b"".join(d.to_bytes(4, "big") for d in (2**32 - 1, 28, 28))
    _plant(fake_mnist, IMAGES, gzip.compress(huge + bytes(784)), monkeypatch)
    error, peak, _ = _load_measured(tmp_path)
    assert str(error).endswith(f"IDX header says shape (4294967295, 28, 28), expected "
                               f"(N, 28, 28) with N <= {data.MAX_IDX_SAMPLES}: not an "
                               f"MNIST-style IDX file")
    assert peak < 32 << 20


@pytest.mark.parametrize(("header", "body", "message"), [
    (b"\x00\x00\x08\x01", b"", "bad IDX magic number 2049, expected 2051 (unsigned bytes, "
                               "3 dimensions)"),
    (b"\x00\x00\x0d\x03", b"", "bad IDX magic number 3331, expected 2051"),  # float32 data
    (b"\x00\x00\x08\x03" + b"".join(d.to_bytes(4, "big") for d in (20, 32, 32)), b"",
     "IDX header says shape (20, 32, 32), expected (N, 28, 28)"),
    (b"\x00\x00\x08\x03" + b"".join(d.to_bytes(4, "big") for d in (20, 28, 28)), bytes(100),
     "IDX header says shape (20, 28, 28) (15680 bytes) but the file has 100 data bytes"),
    (b"\x00\x00\x08\x03" + (20).to_bytes(4, "big"), b"",
     "8 bytes is too short for an IDX header"),
])
def test_wrong_idx_headers_are_clear_errors(fake_mnist, monkeypatch, tmp_path, header, body,
                                            message):
    _plant(fake_mnist, IMAGES, gzip.compress(header + body), monkeypatch)
    with pytest.raises(ValueError, match=re.escape(f"train-images-idx3-ubyte.gz: {message}")):
        data.load("mnist", root=tmp_path)


def test_images_and_labels_of_different_counts(fake_mnist, monkeypatch, tmp_path):
    _plant(fake_mnist, LABELS, _idx(np.zeros(7, np.uint8)), monkeypatch)
    with pytest.raises(ValueError, match=r"has shape \(20, 28, 28\) and .* \(7,\); expected"):
        data.load("mnist", root=tmp_path)


def test_truncated_or_corrupt_gzip_is_a_clear_error(fake_mnist, monkeypatch, tmp_path):
    good = (fake_mnist.server.root / "mnist" / IMAGES).read_bytes()
    _plant(fake_mnist, IMAGES, good[: len(good) // 2], monkeypatch)
    with pytest.raises(ValueError, match="not a valid gzip file"):
        data.load("mnist", root=tmp_path)
    bad_crc = good[:-8] + bytes(b ^ 0xFF for b in good[-8:-4]) + good[-4:]
    _plant(fake_mnist, IMAGES, bad_crc, monkeypatch)
    with pytest.raises(ValueError, match=r"not a valid gzip file .*CRC check failed"):
        data.load("mnist", root=tmp_path)
    garbage = good[:20] + bytes(b ^ 0xFF for b in good[20:60]) + good[60:]
    _plant(fake_mnist, IMAGES, garbage, monkeypatch)
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte\.gz: "):
        data.load("mnist", root=tmp_path)


def test_oversized_cifar_member_is_refused_before_reading_it(tmp_path):
    """A tar member larger than a CIFAR-10 batch (its header says so) is not read."""
    member = "cifar-10-batches-bin/data_batch_1.bin"
    size = data._CIFAR_BATCH_MAX + 1
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo(member)
        info.size = size
        tar.addfile(info, io.BytesIO(bytes(size)))
    path = tmp_path / "cifar.tar.gz"
    path.write_bytes(gzip.compress(raw.getvalue(), mtime=0))
    with pytest.raises(ValueError, match=f"{member} is {size} bytes, more than a CIFAR-10 batch"):
        data._read_cifar_tar(path)


def test_zlib_error_class_is_handled():
    assert not issubclass(zlib.error, OSError)  # why _read_idx catches zlib.error itself


def test_disk_full_while_downloading_leaves_nothing_to_read_back(fake_mnist, monkeypatch,
                                                                  tmp_path):
    """ENOSPC after the first kilobyte of a download: a DownloadError that says so, no file
    (nor a .part) under the cache folder, and the next load downloads and verifies afresh."""
    real = data.tempfile.NamedTemporaryFile

    class FillingDisk:
        def __init__(self, *args, **kwargs):
            self._f, self.written = real(*args, **kwargs), 0
            self.name = self._f.name

        def write(self, chunk):
            if self.written + len(chunk) > 1000:
                self._f.write(chunk[: 1000 - self.written])
                raise OSError(errno.ENOSPC, "No space left on device")
            self.written += len(chunk)
            return self._f.write(chunk)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return self._f.__exit__(*exc)

    monkeypatch.setattr(data.tempfile, "NamedTemporaryFile", FillingDisk)
    with pytest.raises(data.DownloadError, match="No space left on device"):
        data.load("mnist", root=tmp_path)
    assert list((tmp_path / "mnist").iterdir()) == []
    monkeypatch.setattr(data.tempfile, "NamedTemporaryFile", real)
    assert len(data.load("mnist", root=tmp_path).train) == 20


# ----------------------------------------------------------------------------------------------
# the datasets shipped inside ttqlab (ttqlab/_data/): checked before every read


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    """A copy of the shipped files in tmp_path, read by data.load instead of the real ones."""
    real = data._package_data_dir()
    for name in data.PACKAGE_DATA:
        (tmp_path / name).write_bytes((real / name).read_bytes())
    monkeypatch.setattr(data, "_package_data_dir", lambda: tmp_path)
    return tmp_path


def test_a_damaged_shipped_file_is_refused_and_says_how_to_fix_it(shipped):
    blob = bytearray((shipped / "digits.npz").read_bytes())
    blob[len(blob) // 2] ^= 1  # one bit
    (shipped / "digits.npz").write_bytes(bytes(blob))
    with pytest.raises(data.PackageDataError,
                       match=r"digits\.npz is damaged: 44657 bytes, sha256 .*reinstall ttqlab"):
        data.load("digits")


def test_an_oversized_shipped_file_is_refused_without_reading_it_all(shipped, tmp_path):
    size = data.PACKAGE_DATA["mnist1d-n5000-seed0.npz"][1]
    with open(shipped / "mnist1d-n5000-seed0.npz", "ab") as f:
        f.truncate(size + (256 << 20))  # 256 MB more (sparse: no disk used)
    tracemalloc.start()
    try:
        with pytest.raises(data.PackageDataError, match=rf"more than {size} bytes"):
            data.load("mnist1d", root=tmp_path / "cache")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"read {peak} bytes of a file pinned at {size}"


def test_a_missing_shipped_file_says_the_install_lacks_it(shipped):
    (shipped / "digits.npz").unlink()
    with pytest.raises(data.PackageDataError, match=r"digits\.npz is missing from this install"):
        data.load("digits")


def test_a_shipped_file_holding_a_pickle_is_never_unpickled(shipped, monkeypatch, tmp_path):
    """Even with a checksum that matches it (a compromised build), an object array is refused,
    not unpickled."""
    marker = tmp_path / "unpickled"

    class Payload:
        def __reduce__(self):
            return (marker.touch, ())

    bad = np.empty(1, dtype=object)
    bad[0] = Payload()
    out = io.BytesIO()
    np.savez(out, images=bad, target=np.zeros(1, np.uint8))
    blob = out.getvalue()
    (shipped / "digits.npz").write_bytes(blob)
    set_spec(monkeypatch, "digits",
             package_data={"digits.npz": (hashlib.sha256(blob).hexdigest(), len(blob))})
    with pytest.raises(data.PackageDataError, match=r"not a readable \.npz"):
        data.load("digits")
    assert not marker.exists()
