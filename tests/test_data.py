"""Tests for ttqlab.data: offline datasets, and downloads against a local HTTP server.

Nothing here touches the internet: the download tests serve small generated MNIST /
Fashion-MNIST / CIFAR-10 files from 127.0.0.1 and patch the checksum registry to match them.
"""

from __future__ import annotations

import dataclasses
import errno
import gzip
import hashlib
import http.server
import importlib
import importlib.util
import io
import os
import random
import socket
import sys
import tarfile
import threading
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

import ttqlab
from ttqlab import data

DOWNLOADED = ("mnist", "fashion-mnist", "cifar10")


def set_spec(monkeypatch, name: str, **changes) -> data.DatasetSpec:
    """Replace fields of dataset `name`'s registered spec (files=, mirrors=, ...) for one test."""
    spec = dataclasses.replace(data.dataset_spec(name), **changes)
    monkeypatch.setitem(data._REGISTRY, spec.name, spec)
    return spec


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Every test gets its own cache dir and no real mirror, so nothing leaves this machine."""
    monkeypatch.setenv("TTQLAB_DATA", str(tmp_path / "cache"))
    monkeypatch.delenv("TTQLAB_MIRROR", raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    for name in DOWNLOADED:
        set_spec(monkeypatch, name, mirrors=[])


# ----------------------------------------------------------------------------------------------
# offline datasets


def test_import_is_light(monkeypatch):
    """`import ttqlab.data` must not import scikit-learn or mnist1d (slow: matplotlib, scipy)."""
    for heavy in ("sklearn", "mnist1d", "mnist1d.data"):
        monkeypatch.setitem(sys.modules, heavy, None)  # importing it now raises ImportError
    monkeypatch.delitem(sys.modules, "ttqlab.data")
    monkeypatch.setattr(ttqlab, "data", data)  # restored after the re-import below
    fresh = importlib.import_module("ttqlab.data")
    assert fresh.DATASETS == data.DATASETS


def test_digits():
    d = data.load("digits")
    x, y = d.train.tensors
    assert (d.name, d.input_shape, d.num_classes, d.classes) == ("digits", (1, 8, 8), 10,
                                                                 list("0123456789"))
    assert x.shape == (1347, 1, 8, 8) and len(d.test) == 450
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert d.test.tensors[0].dtype == torch.float32 and d.test.tensors[1].dtype == torch.int64
    assert abs(x.mean().item()) < 1e-4 and abs(x.std().item() - 1) < 1e-3
    assert int(y.min()) == 0 and int(y.max()) == 9
    # stratified: every class is about a quarter test
    assert torch.bincount(d.test.tensors[1], minlength=10).min() >= 40
    assert "\n" not in d.description and "1347 train" in d.description


def test_default_datasets_need_neither_scikit_learn_nor_mnist1d(monkeypatch, tmp_path):
    """What ``pip install ttqlab`` (no extra) loads: the digits for any seed and MNIST-1D's
    default split come from the files shipped inside ttqlab; another MNIST-1D seed needs the
    generator, and the error says which pip install adds it."""
    for heavy in ("sklearn", "sklearn.datasets", "sklearn.model_selection", "mnist1d",
                  "mnist1d.data"):
        monkeypatch.setitem(sys.modules, heavy, None)  # importing it now raises ImportError
    d = data.load("digits", seed=5)
    assert (len(d.train), len(d.test)) == (1347, 450)
    m = data.load("mnist1d", root=tmp_path)
    assert (len(m.train), len(m.test)) == (4000, 1000)
    assert data._mnist1d_problem(data._make_mnist1d(0), seed=0) is None
    with pytest.raises(ImportError, match=r'seed=3.*pip install "ttqlab\[datasets\]" adds it'):
        data.load("mnist1d", root=tmp_path, seed=3)


def test_the_shipped_files_are_pinned_and_small():
    """Every shipped dataset is in PACKAGE_DATA (SHA-256 and size) and all of them together
    stay under 1 MB; their credits and licenses ship next to them."""
    folder = Path(data.__file__).parent / "_data"
    shipped = sorted(p.name for p in folder.glob("*.npz"))
    assert shipped == sorted(data.PACKAGE_DATA)
    for name, (sha256, size) in data.PACKAGE_DATA.items():
        blob = (folder / name).read_bytes()
        assert (len(blob), hashlib.sha256(blob).hexdigest()) == (size, sha256), name
    assert sum(size for _, size in data.PACKAGE_DATA.values()) < 1_000_000
    readme = (folder / "README.md").read_text()
    for credit in ("Apache-2.0", "BSD-3-Clause", "Greydanus", "Alpaydin", "UCI",
                   "tools/make_package_data.py"):
        assert credit in readme, credit
    assert "Apache License" in (folder / "LICENSE-mnist1d").read_text()
    assert "BSD 3-Clause" in (folder / "LICENSE-scikit-learn").read_text()


def test_digits_table_is_scikit_learns_and_the_split_is_train_test_splits():
    """The shipped table is ``load_digits()`` exactly, and `_stratified_split` draws the
    indices ``train_test_split(..., test_size=0.25, stratify=y, random_state=seed)`` draws,
    for seeds near 0 and up to 2**32 - 1 (where scikit-learn is installed)."""
    pytest.importorskip("sklearn")
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    table = data._package_arrays("digits.npz")
    np.testing.assert_array_equal(table["images"].astype(np.float64), x)
    np.testing.assert_array_equal(table["target"], y)
    index = np.arange(len(y))
    for seed in [*range(8), 1234, 2**31, 2**32 - 1]:
        want = train_test_split(index, test_size=0.25, stratify=y, random_state=seed)
        got = data._stratified_split(y, test_size=0.25, seed=seed)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
    # and so load("digits") gives what the scikit-learn version gave, bit for bit
    xs = x.reshape(-1, 1, 8, 8)
    x_train, x_test, y_train, y_test = train_test_split(xs, y, test_size=0.25, stratify=y,
                                                        random_state=3)
    mean, std = x_train.mean(), x_train.std()
    d = data.load("digits", seed=3)
    np.testing.assert_array_equal(d.train.tensors[0].numpy(),
                                  ((x_train - mean) / std).astype(np.float32))
    np.testing.assert_array_equal(d.test.tensors[0].numpy(),
                                  ((x_test - mean) / std).astype(np.float32))
    np.testing.assert_array_equal(d.train.tensors[1].numpy(), y_train)
    np.testing.assert_array_equal(d.test.tensors[1].numpy(), y_test)


def test_stratified_split_rounds_like_scikit_learn_on_small_uneven_classes():
    """Uneven classes (remainders to distribute, ties broken by the seed)."""
    pytest.importorskip("sklearn")
    from sklearn.model_selection import train_test_split

    y = np.array([0] * 7 + [1] * 5 + [2] * 3 + [3] * 2)
    for seed in range(8):
        for test_size in (0.25, 0.3, 0.5):
            want = train_test_split(np.arange(len(y)), test_size=test_size, stratify=y,
                                    random_state=seed)
            got = data._stratified_split(y, test_size=test_size, seed=seed)
            assert [list(g) for g in got] == [list(w) for w in want], (seed, test_size)


@pytest.mark.slow
def test_the_shipped_files_are_what_the_script_writes_from_upstream():
    """tools/make_package_data.py, run against the installed scikit-learn and mnist1d, writes
    the shipped files byte for byte (and so MNIST-1D's default split is the generator's)."""
    pytest.importorskip("sklearn")
    pytest.importorskip("mnist1d")
    tools = Path(__file__).resolve().parents[1] / "tools"
    spec = importlib.util.spec_from_file_location("make_package_data",
                                                  tools / "make_package_data.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    folder = Path(data.__file__).parent / "_data"
    for name, blob in script.outputs().items():
        assert (folder / name).read_bytes() == blob, f"{name} is not what the script writes"
        if name in data.PACKAGE_DATA:
            assert data.PACKAGE_DATA[name] == (hashlib.sha256(blob).hexdigest(), len(blob))


def test_digits_deterministic_split():
    a, b, c = data.load("digits"), data.load("digits", seed=0), data.load("digits", seed=1)
    for ta, tb in zip(a.train.tensors + a.test.tensors, b.train.tensors + b.test.tensors,
                      strict=True):
        assert torch.equal(ta, tb)
    assert not torch.equal(a.train.tensors[1], c.train.tensors[1])


def test_unpacks_like_a_pair_and_has_a_short_repr():
    d = data.load("synthetic", n_train=30, n_test=20)
    train, test = d
    assert train is d.train and test is d.test
    assert repr(d) == ("Data('synthetic': 30 train / 20 test, input_shape=(1, 8, 8), "
                       "num_classes=10)")


def test_synthetic():
    d = data.load("synthetic")
    (x, y), (xt, yt) = d.train.tensors, d.test.tensors
    assert x.shape == (2000, 1, 8, 8) and xt.shape == (500, 1, 8, 8)
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert abs(x.mean().item()) < 1e-4 and abs(x.std().item() - 1) < 1e-3
    assert set(y.tolist()) == set(range(10))
    # learnable but not trivial: nearest class mean gets most, not all, of the test set
    # right. Three seeds and a margin (measured 0.962-0.978 over seeds 0-5: 0.8 < each < 1)
    for seed in (0, 1, 2):
        (xs, ys), (xts, yts) = (t.tensors for t in data.load("synthetic", seed=seed))
        means = torch.stack([xs[ys == c].mean(0) for c in range(10)]).flatten(1)
        acc = (torch.cdist(xts.flatten(1), means).argmin(1) == yts).float().mean().item()
        assert 0.8 < acc < 1.0, (seed, acc)

    same, other = data.load("synthetic", seed=0), data.load("synthetic", seed=1)
    assert torch.equal(same.train.tensors[0], x) and torch.equal(same.test.tensors[1], yt)
    assert not torch.equal(other.train.tensors[0], x)


def test_synthetic_options():
    d = data.load("synthetic", n_train=100, n_test=40, num_classes=3, noise=0.5, seed=7)
    assert (len(d.train), len(d.test), d.num_classes, len(d.classes)) == (100, 40, 3, 3)
    assert int(d.train.tensors[1].max()) == 2
    with pytest.raises(ValueError, match="noise"):
        data.load("synthetic", noise=-1.0)
    with pytest.raises(ValueError, match="num_classes"):
        data.load("synthetic", num_classes=1)


@pytest.mark.parametrize("name", ["digits", "synthetic"])
def test_limits_take_the_first_samples(name):
    full, small = data.load(name), data.load(name, limit_train=100, limit_test=7)
    assert (len(small.train), len(small.test)) == (100, 7)
    assert torch.equal(small.train.tensors[0], full.train.tensors[0][:100])
    assert torch.equal(small.test.tensors[1], full.test.tensors[1][:7])
    big = data.load(name, limit_train=10**9)  # more than there is: everything
    assert len(big.train) == len(full.train)


@pytest.fixture(scope="module")
def mnist1d(tmp_path_factory):
    """Generate MNIST-1D once (a few seconds), watching the global RNGs while doing so."""
    root = tmp_path_factory.mktemp("mnist1d-cache")
    # the legacy global numpy RNG is exactly what is under test here
    saved = np.random.get_state(), random.getstate()  # noqa: NPY002
    try:
        np.random.seed(1234)  # noqa: NPY002
        random.seed(1234)
        d = data.load("mnist1d", root=root)
        after = (np.random.random(3), random.random())  # noqa: NPY002
        np.random.seed(1234)  # noqa: NPY002
        random.seed(1234)
        expected = (np.random.random(3), random.random())  # noqa: NPY002
    finally:
        np.random.set_state(saved[0])  # noqa: NPY002
        random.setstate(saved[1])
    return SimpleNamespace(root=root, data=d, rng_after=after, rng_expected=expected)


def test_mnist1d(mnist1d):
    d = mnist1d.data
    (x, y), (xt, yt) = d.train.tensors, d.test.tensors
    assert (d.name, d.input_shape, d.num_classes) == ("mnist1d", (1, 40), 10)
    assert x.shape == (4000, 1, 40) and xt.shape == (1000, 1, 40)
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert abs(x.mean().item()) < 0.05 and abs(x.std().item() - 1) < 0.05
    assert set(y.tolist()) == set(yt.tolist()) == set(range(10))


def test_mnist1d_leaves_global_rngs_alone(mnist1d):
    np.testing.assert_array_equal(mnist1d.rng_after[0], mnist1d.rng_expected[0])
    assert mnist1d.rng_after[1] == mnist1d.rng_expected[1]


def test_mnist1d_second_load_comes_from_the_cache(mnist1d, monkeypatch):
    cached = list((mnist1d.root / "mnist1d").glob("*.npz"))
    assert [p.name for p in cached] == ["mnist1d-n5000-seed0.npz"]
    for mod in ("mnist1d", "mnist1d.data"):
        monkeypatch.setitem(sys.modules, mod, None)  # generating again would raise ImportError
    start = time.perf_counter()
    again = data.load("mnist1d", root=mnist1d.root, limit_test=10)
    assert time.perf_counter() - start < 1.0
    assert torch.equal(again.train.tensors[0], mnist1d.data.train.tensors[0])
    assert torch.equal(again.test.tensors[1], mnist1d.data.test.tensors[1][:10])


def _layout_arrays(fill: float = 0.0, label: int = 1) -> dict[str, np.ndarray]:
    """Arrays with MNIST-1D's counts, shapes and dtypes (for seeds ttqlab does not pin)."""
    return {"x_train": np.full((4000, 40), fill, np.float32),
            "y_train": np.full(4000, label, np.int64),
            "x_test": np.full((1000, 40), fill, np.float32),
            "y_test": np.full(1000, label, np.int64)}


def _generated(mnist1d) -> dict[str, np.ndarray]:
    """The seed-0 arrays as the generator makes them, from the module's one generation."""
    (x, y), (xt, yt) = mnist1d.data.train.tensors, mnist1d.data.test.tensors
    return {"x_train": x[:, 0].numpy(), "y_train": y.numpy(),
            "x_test": xt[:, 0].numpy(), "y_test": yt.numpy()}


def _count_generations(monkeypatch, arrays) -> list[int]:
    calls = []
    monkeypatch.setattr(data, "_make_mnist1d", lambda seed: calls.append(seed) or arrays)
    return calls


def test_mnist1d_broken_cache_is_rebuilt(mnist1d, tmp_path, monkeypatch):
    """An unreadable .npz is regenerated (here: by a stand-in generator, to stay fast)."""
    calls = _count_generations(monkeypatch, _layout_arrays())
    path = tmp_path / "mnist1d" / "mnist1d-n5000-seed3.npz"
    path.parent.mkdir()
    path.write_bytes(b"not a zip file")
    with pytest.warns(UserWarning, match=r"mnist1d-n5000-seed3.npz is unreadable; generating"):
        d = data.load("mnist1d", root=tmp_path, seed=3)
    assert calls == [3] and d.train.tensors[0].shape == (4000, 1, 40)
    assert np.load(path, allow_pickle=False)["y_test"].shape == (1000,)


def test_mnist1d_pinned_fingerprints_match_the_generator(mnist1d):
    labels, stats = data._mnist1d_fingerprint(_generated(mnist1d))
    pinned = data.MNIST1D_FINGERPRINTS[(5000, 0)]
    assert labels == pinned[0] and np.allclose(stats, pinned[1], rtol=1e-5, atol=1e-3)
    assert data._mnist1d_problem(_generated(mnist1d), seed=0) is None
    signals = dict(_generated(mnist1d))
    signals["x_test"] = signals["x_test"].copy()
    signals["x_test"][0] += 0.01  # one sample changed a little: caught
    assert "signals' sums differ" in data._mnist1d_problem(signals, seed=0)


@pytest.mark.parametrize("poison", ["tiny", "same layout", "pickled"])
def test_mnist1d_poisoned_cache_is_detected_and_rebuilt(mnist1d, tmp_path, monkeypatch, poison):
    """A valid .npz that is not MNIST-1D (10 train / 5 test zeros, every label 3; or the right
    shapes with the wrong numbers; or an object array) is rebuilt with a warning, never
    unpickled."""
    path = tmp_path / "mnist1d" / "mnist1d-n5000-seed0.npz"
    path.parent.mkdir()
    marker = tmp_path / "unpickled"
    if poison == "tiny":
        np.savez(path, x_train=np.zeros((10, 40), np.float32), y_train=np.full(10, 3),
                 x_test=np.zeros((5, 40), np.float32), y_test=np.full(5, 3))
        reason = r"is not as generated: x_train has shape \(10, 40\)"
    elif poison == "same layout":
        np.savez(path, **_layout_arrays(0.0, 3))
        reason = "is not as generated: its labels' sha256 differs from the pinned"
    else:
        class Payload:
            def __reduce__(self):
                return (Path.touch, (marker,))

        bad = np.empty(1, dtype=object)
        bad[0] = Payload()
        np.savez(path, **{**_layout_arrays(), "x_train": bad})
        reason = "is unreadable; generating it again"
    calls = _count_generations(monkeypatch, _generated(mnist1d))
    with pytest.warns(UserWarning, match=f"MNIST-1D cache .*seed0.npz {reason}"):
        d = data.load("mnist1d", root=tmp_path)
    assert calls == [0] and not marker.exists()
    assert torch.equal(d.train.tensors[0], mnist1d.data.train.tensors[0])
    with np.load(path, allow_pickle=False) as f:  # the rebuilt cache is the real one
        assert data._mnist1d_problem({k: f[k] for k in f.files}, seed=0) is None


def test_mnist1d_unpinned_seed_is_checked_for_counts_shapes_and_labels(tmp_path, monkeypatch):
    path = tmp_path / "mnist1d" / "mnist1d-n5000-seed7.npz"
    path.parent.mkdir()
    np.savez(path, **_layout_arrays(label=12))
    calls = _count_generations(monkeypatch, _layout_arrays())
    with pytest.warns(UserWarning, match="y_train has labels outside 0..9"):
        data.load("mnist1d", root=tmp_path, seed=7)
    assert calls == [7]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a good cache: no warning, no generation
        data.load("mnist1d", root=tmp_path, seed=7)
    assert calls == [7]


def test_mnist1d_good_cache_is_used_without_rebuilding(mnist1d, monkeypatch):
    calls = _count_generations(monkeypatch, None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        d = data.load("mnist1d", root=mnist1d.root)
    assert calls == [] and torch.equal(d.test.tensors[0], mnist1d.data.test.tensors[0])


def test_mnist1d_disk_full_leaves_no_cache_to_read_back(mnist1d, tmp_path, monkeypatch):
    """ENOSPC halfway through writing the cache: a warning, no file under the final name (nor a
    .part), and the next load generates again instead of reading half a file."""
    real_savez = np.savez

    def savez_then_disk_full(f, **arrays):
        buffer = io.BytesIO()
        real_savez(buffer, **arrays)
        f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(data.np, "savez", savez_then_disk_full)
    calls = _count_generations(monkeypatch, _generated(mnist1d))
    with pytest.warns(UserWarning, match="could not cache .*No space left on device"):
        data.load("mnist1d", root=tmp_path)
    assert list((tmp_path / "mnist1d").iterdir()) == []
    monkeypatch.setattr(data.np, "savez", real_savez)
    data.load("mnist1d", root=tmp_path)
    assert calls == [0, 0]
    # a half-written file that did reach the final name (e.g. copied by hand) is not used
    path = tmp_path / "mnist1d" / "mnist1d-n5000-seed0.npz"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.warns(UserWarning, match="is unreadable; generating it again"):
        data.load("mnist1d", root=tmp_path)
    assert calls == [0, 0, 0]


def test_cache_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("TTQLAB_DATA", str(tmp_path / "env"))
    assert data.cache_dir(tmp_path / "arg") == tmp_path / "arg"
    assert (tmp_path / "arg").is_dir()
    assert data.cache_dir() == tmp_path / "env"
    monkeypatch.delenv("TTQLAB_DATA")
    monkeypatch.chdir(tmp_path)
    assert data.cache_dir().resolve() == tmp_path / "data"


# ----------------------------------------------------------------------------------------------
# bad arguments


def test_unknown_dataset_lists_the_valid_names():
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'") as e:
        data.load("imagenet")
    for name in data.DATASETS:
        assert name in str(e.value)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"limit_train": 0}, r"limit_train must be a whole number .*>= 1.*, got 0 "),
    ({"limit_test": -5}, r"limit_test must be a whole number .*>= 1.*, got -5 "),
    ({"limit_train": "100"}, "limit_train"),
    ({"limit_train": 2.5}, "limit_train"),
    ({"batch_size": 32}, "unknown option.*batch_size.*limit_train"),
    ({"timeout": 3}, "unknown option.*timeout"),  # digits downloads nothing
    ({"seed": -1}, "seed"),
    ({"seed": 2**32}, r"seed must be a whole number .*<= 4294967295"),
])
def test_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        data.load("digits", **kwargs)


def test_download_must_be_a_bool():
    """download="no" would otherwise count as true and fetch files."""
    with pytest.raises(TypeError, match="download must be True or False"):
        data.load("mnist", download="no")


def test_bad_timeout():
    with pytest.raises(ValueError, match="timeout must be a finite number > 0, got 0"):
        data.load("mnist", timeout=0)


def test_aliases():
    assert data.load("Synthetic", n_train=5, n_test=5).name == "synthetic"


# ----------------------------------------------------------------------------------------------
# a local HTTP server and small fake datasets


@pytest.fixture
def server(tmp_path):
    """Serve tmp_path/www on 127.0.0.1. `mode`: "ok", "truncate" (half the body, then close)
    or "drop" (close the connection without answering). `requests` lists the paths asked for.
    """
    root = tmp_path / "www"
    root.mkdir()
    state = SimpleNamespace(root=root, requests=[], mode="ok")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            state.requests.append(self.path)
            if state.mode == "drop":
                return
            path = root / self.path.lstrip("/")
            if not path.is_file():
                self.send_error(404)
                return
            body = path.read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2] if state.mode == "truncate" else body)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield state
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _registry(folder: Path) -> dict[str, tuple[str, int]]:
    """filename -> (sha256, size) of the files in `folder`, train files first (like CHECKSUMS)."""
    files = sorted(folder.iterdir(), key=lambda p: (not p.name.startswith("train"), p.name))
    return {p.name: (_sha256(p), p.stat().st_size) for p in files}


def _idx(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    return gzip.compress(header + array.tobytes(), mtime=0)


def make_idx_dataset(www: Path, name: str, n_train: int = 20, n_test: int = 10):
    """Write the four IDX .gz files of a tiny MNIST-like dataset under www/name/."""
    rng = np.random.default_rng(0)
    folder = www / name
    folder.mkdir(parents=True)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(_idx(images))
        (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(_idx(labels))
        arrays[prefix] = (images, labels)
    return arrays, _registry(folder)


CIFAR_BATCHES = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]


def make_cifar(www: Path, extra: dict[str, bytes] | None = None):
    """Write a tiny cifar-10-binary.tar.gz (3 records per train batch, 4 test) in www/cifar10."""
    rng = np.random.default_rng(1)
    members = {"cifar-10-batches-bin/batches.meta.txt": "\n".join(data._CIFAR10_CLASSES).encode()}
    arrays = {}
    for batch in CIFAR_BATCHES:
        n = 4 if batch == "test_batch.bin" else 3
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        images = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        records = np.concatenate([labels[:, None], images.reshape(n, -1)], axis=1)
        members[f"cifar-10-batches-bin/{batch}"] = records.tobytes()
        arrays[batch] = (images, labels)
    members.update(extra or {})
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for member, payload in members.items():
            info = tarfile.TarInfo(member)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    folder = www / "cifar10"
    folder.mkdir(parents=True)
    (folder / "cifar-10-binary.tar.gz").write_bytes(buf.getvalue())
    return arrays, _registry(folder)


@pytest.fixture
def fake_mnist(server, monkeypatch):
    arrays, checksums = make_idx_dataset(server.root, "mnist")
    set_spec(monkeypatch, "mnist", files=checksums)
    monkeypatch.setenv("TTQLAB_MIRROR", server.url)
    return SimpleNamespace(arrays=arrays, checksums=checksums, server=server)


def _leftovers(folder: Path, good: dict) -> list[str]:
    """Files in `folder` other than verified good ones (temp files, half downloads)."""
    if not folder.exists():
        return []
    return sorted(p.name for p in folder.iterdir()
                  if p.name not in good or _sha256(p) != good[p.name][0])


# ----------------------------------------------------------------------------------------------
# downloads


def test_mnist_download_parse_and_cache(fake_mnist, tmp_path):
    d = data.load("mnist", root=tmp_path / "c")
    images, labels = fake_mnist.arrays["train"]
    expected = (torch.from_numpy(images).float() / 255 - 0.1307) / 0.3081
    assert d.input_shape == (1, 28, 28) and d.num_classes == 10
    assert (len(d.train), len(d.test)) == (20, 10)
    assert torch.allclose(d.train.tensors[0][:, 0], expected, atol=1e-5)
    assert torch.equal(d.train.tensors[1], torch.from_numpy(labels).long())
    assert torch.equal(d.test.tensors[1], torch.from_numpy(fake_mnist.arrays["t10k"][1]).long())
    assert d.train.tensors[0].dtype == torch.float32 and d.train.tensors[1].dtype == torch.int64
    assert len(fake_mnist.server.requests) == 4
    assert fake_mnist.server.requests[0] == "/mnist/train-images-idx3-ubyte.gz"
    assert sorted(p.name for p in (tmp_path / "c" / "mnist").iterdir()) == sorted(
        fake_mnist.checksums)

    again = data.load("mnist", root=tmp_path / "c", limit_train=5)  # from the cache
    assert len(fake_mnist.server.requests) == 4
    assert torch.equal(again.train.tensors[0], d.train.tensors[0][:5])


def test_fashion_mnist(server, monkeypatch, tmp_path):
    arrays, checksums = make_idx_dataset(server.root, "fashion-mnist", n_train=12, n_test=6)
    set_spec(monkeypatch, "fashion-mnist", files=checksums)
    set_spec(monkeypatch, "fashion-mnist", mirrors=[server.url + "/fashion-mnist/"])
    d = data.load("fashion_mnist", root=tmp_path)
    assert d.name == "fashion-mnist" and d.classes[0] == "T-shirt/top" and d.classes[9] == (
        "Ankle boot")
    expected = (torch.from_numpy(arrays["t10k"][0]).float() / 255 - 0.2860) / 0.3530
    assert torch.allclose(d.test.tensors[0][:, 0], expected, atol=1e-5)
    assert (len(d.train), len(d.test)) == (12, 6)


def test_cifar10(server, monkeypatch, tmp_path):
    arrays, checksums = make_cifar(server.root)
    set_spec(monkeypatch, "cifar10", files=checksums)
    monkeypatch.setenv("TTQLAB_MIRROR", server.url)
    d = data.load("cifar10", root=tmp_path)
    assert d.input_shape == (3, 32, 32) and d.classes[0] == "airplane" and d.num_classes == 10
    assert (len(d.train), len(d.test)) == (15, 4)
    images = np.concatenate([arrays[b][0] for b in CIFAR_BATCHES[:5]])
    labels = np.concatenate([arrays[b][1] for b in CIFAR_BATCHES[:5]])
    mean = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
    std = torch.tensor([0.2470, 0.2435, 0.2616]).view(1, 3, 1, 1)
    expected = (torch.from_numpy(images).float() / 255 - mean) / std
    assert torch.allclose(d.train.tensors[0], expected, atol=1e-5)
    assert torch.equal(d.train.tensors[1], torch.from_numpy(labels).long())
    assert torch.equal(d.test.tensors[1], torch.from_numpy(arrays["test_batch.bin"][1]).long())
    small = data.load("cifar10", root=tmp_path, limit_train=4, limit_test=1)
    assert torch.equal(small.train.tensors[0], d.train.tensors[0][:4])
    assert len(server.requests) == 1
    assert [p.name for p in (tmp_path / "cifar10").iterdir()] == ["cifar-10-binary.tar.gz"]


@pytest.mark.parametrize("member", ["../evil.bin", "/tmp/evil.bin",
                                    "cifar-10-batches-bin/../../evil.bin"])
def test_cifar10_rejects_unsafe_members(server, monkeypatch, tmp_path, member):
    _, checksums = make_cifar(server.root, extra={member: b"x"})
    set_spec(monkeypatch, "cifar10", files=checksums)
    monkeypatch.setenv("TTQLAB_MIRROR", server.url)
    with pytest.raises(ValueError, match="unsafe path"):
        data.load("cifar10", root=tmp_path)
    assert not (tmp_path / "evil.bin").exists()


def test_cifar10_missing_batch_is_a_clear_error(server, monkeypatch, tmp_path):
    make_cifar(server.root)
    path = server.root / "cifar10" / "cifar-10-binary.tar.gz"
    buf = io.BytesIO()
    with tarfile.open(path) as src, tarfile.open(fileobj=buf, mode="w:gz") as dst:
        for m in src:
            if not m.name.endswith("test_batch.bin"):
                dst.addfile(m, src.extractfile(m))
    path.write_bytes(buf.getvalue())
    set_spec(monkeypatch, "cifar10", files=_registry(path.parent))
    monkeypatch.setenv("TTQLAB_MIRROR", server.url)
    with pytest.raises(ValueError, match=r"lacks cifar-10-batches-bin/test_batch\.bin"):
        data.load("cifar10", root=tmp_path)


def test_malformed_idx_is_a_clear_value_error(fake_mnist, monkeypatch, tmp_path):
    bad = fake_mnist.server.root / "mnist" / "train-labels-idx1-ubyte.gz"
    bad.write_bytes(gzip.compress(b"\x00\x00\x08\x03" + b"\x00" * 20))  # images magic, labels file
    set_spec(monkeypatch, "mnist", files=_registry(bad.parent))
    with pytest.raises(ValueError, match="bad IDX magic number 2051, expected 2049"):
        data.load("mnist", root=tmp_path)
    bad.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + (50).to_bytes(4, "big") + b"\x01" * 7))
    set_spec(monkeypatch, "mnist", files=_registry(bad.parent))
    with pytest.raises(ValueError, match="IDX header says shape"):
        data.load("mnist", root=tmp_path)


def test_checksum_mismatch_leaves_nothing_behind(fake_mnist, monkeypatch, tmp_path):
    checksums = dict(fake_mnist.checksums)
    name = "train-labels-idx1-ubyte.gz"
    actual, size = checksums[name]
    checksums[name] = ("0" * 64, size)
    set_spec(monkeypatch, "mnist", files=checksums)
    with pytest.raises(data.DownloadError) as e:
        data.load("mnist", root=tmp_path)
    message = str(e.value)
    assert "checksum mismatch" in message and name in message
    assert "0" * 64 in message and actual in message
    folder = tmp_path / "mnist"
    assert not (folder / name).exists()
    assert _leftovers(folder, checksums) == []


@pytest.mark.parametrize("mode", ["truncate", "drop"])
def test_broken_transfer_leaves_nothing_behind(fake_mnist, tmp_path, mode):
    fake_mnist.server.mode = mode
    with pytest.raises(data.DownloadError, match=r"train-images-idx3-ubyte\.gz") as e:
        data.load("mnist", root=tmp_path)
    if mode == "truncate":
        assert "connection closed after" in str(e.value)
    assert list((tmp_path / "mnist").iterdir()) == []


def test_next_mirror_is_tried(fake_mnist, monkeypatch, tmp_path):
    """A 404 and a wrong file on $TTQLAB_MIRROR, then the right files on the next mirror."""
    www = fake_mnist.server.root
    (www / "bad" / "mnist").mkdir(parents=True)
    (www / "bad" / "mnist" / "train-images-idx3-ubyte.gz").write_bytes(b"wrong")
    monkeypatch.setenv("TTQLAB_MIRROR", fake_mnist.server.url + "/bad/")
    set_spec(monkeypatch, "mnist", mirrors=[fake_mnist.server.url + "/mnist"])
    d = data.load("mnist", root=tmp_path)
    assert len(d.train) == 20
    assert fake_mnist.server.requests[:2] == ["/bad/mnist/train-images-idx3-ubyte.gz",
                                              "/mnist/train-images-idx3-ubyte.gz"]
    assert len(fake_mnist.server.requests) == 8
    assert _leftovers(tmp_path / "mnist", fake_mnist.checksums) == []


def test_corrupted_cache_is_downloaded_again(fake_mnist, tmp_path):
    data.load("mnist", root=tmp_path)
    requests = fake_mnist.server.requests
    assert len(requests) == 4
    cached = tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz"
    cached.write_bytes(b"garbage")
    with pytest.raises(data.DownloadError, match=r"t10k-labels-idx1-ubyte\.gz: corrupted"):
        data.load("mnist", root=tmp_path, download=False)
    assert len(requests) == 4
    d = data.load("mnist", root=tmp_path)
    assert requests[4:] == ["/mnist/t10k-labels-idx1-ubyte.gz"]
    assert _sha256(cached) == fake_mnist.checksums[cached.name][0]
    assert len(d.test) == 10


def test_download_false_with_empty_cache_is_immediate(fake_mnist, tmp_path):
    start = time.perf_counter()
    with pytest.raises(data.DownloadError) as e:
        data.load("mnist", root=tmp_path, download=False)
    assert time.perf_counter() - start < 1.0
    assert fake_mnist.server.requests == []
    message = str(e.value)
    assert isinstance(e.value, RuntimeError)
    assert all(name in message for name in fake_mnist.checksums)
    assert str((tmp_path / "mnist").resolve()) in message and "download=True" in message
    assert 'load("digits")' in message and '"mnist1d"' in message


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("name", DOWNLOADED)
def test_offline_is_a_clear_error_within_seconds(monkeypatch, tmp_path, name):
    refused = f"http://127.0.0.1:{_closed_port()}/"
    unroutable = "http://192.0.2.1/"  # TEST-NET-1: never routed
    set_spec(monkeypatch, name, mirrors=[refused, unroutable])
    start = time.perf_counter()
    with pytest.raises(RuntimeError) as e:
        data.load(name, root=tmp_path, timeout=1)
    assert time.perf_counter() - start < 5
    assert isinstance(e.value, data.DownloadError)
    first = next(iter(data.CHECKSUMS[name]))
    message = str(e.value)
    assert f"could not download {first}" in message
    assert refused + first in message and unroutable + first in message
    assert str((tmp_path / name / first).resolve()) in message
    assert 'ttqlab.data.load("digits")' in message and 'ttqlab.data.load("mnist1d")' in message
    assert _leftovers(tmp_path / name, {}) == []


def test_download_helper_directly(server, tmp_path):
    (server.root / "f.bin").write_bytes(b"hello")
    sha = hashlib.sha256(b"hello").hexdigest()
    dest = tmp_path / "dl"
    path = data._download("f.bin", sha, [server.url + "/f.bin"], dest, timeout=2)
    assert path == dest / "f.bin" and path.read_bytes() == b"hello"
    with pytest.raises(data.DownloadError, match="HTTP 404"):
        data._download("g.bin", sha, [server.url + "/g.bin"], dest, timeout=2)
    assert sorted(p.name for p in dest.iterdir()) == ["f.bin"]


# ----------------------------------------------------------------------------------------------
# hostile servers: dripping, endless, flaky (each test bounded: small deadlines, no waits)

BODY = bytes(range(256)) * 4  # 1024 bytes
BODY_SHA = hashlib.sha256(BODY).hexdigest()


@pytest.fixture
def hostile():
    """127.0.0.1 server: /ok, /drip... (1 byte per 50 ms), /stall... (headers, then nothing),
    /endless (no Content-Length, never
    ends), /flaky (first answer cut in half, then whole), /nolength (no Content-Length)."""
    state = SimpleNamespace(requests=[], stop=threading.Event())

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            state.requests.append(self.path)
            try:
                self._answer()
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up: what it should do

        def _answer(self):
            self.send_response(200)
            if self.path in ("/endless", "/nolength"):
                self.send_header("Connection", "close")
                self.end_headers()
                if self.path == "/nolength":
                    self.wfile.write(BODY)
                    return
                while not state.stop.is_set():
                    self.wfile.write(b"\0" * 65536)
                return
            self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            if self.path.startswith("/stall"):  # headers, then silence until the end
                self.wfile.flush()
                state.stop.wait(30)
            elif self.path.startswith("/drip"):
                for b in BODY:
                    if state.stop.wait(0.05):
                        return
                    self.wfile.write(bytes([b]))
                    self.wfile.flush()
            elif self.path == "/flaky" and state.requests.count("/flaky") == 1:
                self.wfile.write(BODY[:500])
            else:
                self.wfile.write(BODY)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield state
    state.stop.set()
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def test_dripping_server_hits_the_deadline(hostile, tmp_path):
    start = time.monotonic()
    with pytest.raises(data.DownloadError, match=r"too slow: \d+ of 1024 bytes"):
        data._download("f.bin", BODY_SHA, [hostile.url + "/drip"], tmp_path, timeout=1,
                       size=len(BODY), min_rate=1000, grace=0.5, retries=0)
    # deadline 0.5 + 1024 / 1000 s, plus at most one read timeout; the drip needs 51 s
    assert time.monotonic() - start < 10
    assert list(tmp_path.iterdir()) == []


def test_drip_is_abandoned_as_soon_as_it_falls_behind_after_the_grace(hostile, tmp_path):
    """20 bytes/s against 100 required: the whole deadline is 0.5 + 10.24 s, but the transfer
    falls behind that pace within a fraction of a second after the grace, and stops then."""
    start = time.monotonic()
    with pytest.raises(data.DownloadError, match=r"too slow: \d+ of 1024 bytes after 0\.\d s "
                                                 r"\(a download must average 100 bytes/s"):
        data._download("f.bin", BODY_SHA, [hostile.url + "/drip"], tmp_path, timeout=1,
                       size=len(BODY), min_rate=100, grace=0.5, retries=2)
    assert time.monotonic() - start < 2.5
    assert hostile.requests == ["/drip"], "too slow is not retried on the same mirror"
    assert list(tmp_path.iterdir()) == []


def test_load_with_dripping_mirrors_is_bounded_and_says_what_to_do(hostile, tmp_path,
                                                                   monkeypatch):
    """``load("mnist")`` against three mirrors that drip 20 bytes/s: each is abandoned soon
    after the grace, and the error says where to put the file by hand."""
    name = "train-images-idx3-ubyte.gz"
    set_spec(monkeypatch, "mnist", files={name: (BODY_SHA, len(BODY))})
    set_spec(monkeypatch, "mnist", mirrors=[hostile.url + "/drip1/", hostile.url + "/drip2/"])
    monkeypatch.setenv("TTQLAB_MIRROR", hostile.url + "/drip0")
    monkeypatch.setattr(data, "MIN_RATE", 100.0)
    monkeypatch.setattr(data, "DOWNLOAD_GRACE", 0.5)
    monkeypatch.setattr(data, "RETRY_WAIT", 0.0)
    start = time.monotonic()
    with pytest.raises(data.DownloadError) as e:
        data.load("mnist", root=tmp_path, timeout=1)
    assert time.monotonic() - start < 5
    assert sorted(hostile.requests) == [f"/drip{i}/{'mnist/' if i == 0 else ''}{name}"
                                        for i in range(3)]
    message = str(e.value)
    assert message.count("too slow") == 3, message
    assert f"To install it by hand, download it elsewhere and copy it to\n  " \
           f"{(tmp_path / 'mnist' / name).resolve()}" in message
    assert _leftovers(tmp_path / "mnist", {}) == []


def test_stalled_transfers_share_one_bounded_wait(hostile, tmp_path, monkeypatch):
    """A mirror that sends headers and then nothing is retried after each read timeout, but
    all attempts on all mirrors together stop at `MAX_WAIT_FACTOR` x one file's deadline."""
    monkeypatch.setattr(data, "RETRY_WAIT", 0.0)
    urls = [hostile.url + "/stall1", hostile.url + "/stall2"]
    start = time.monotonic()
    with pytest.raises(data.DownloadError) as e:  # unbounded: 2 x 6 attempts x 1 s
        data._download("f.bin", BODY_SHA, urls, tmp_path, timeout=1, size=len(BODY),
                       min_rate=1000, grace=0.5, retries=5)
    took = time.monotonic() - start
    budget = data.MAX_WAIT_FACTOR * (0.5 + len(BODY) / 1000)
    assert budget - 0.5 < took < budget + 1.5, took
    assert len(hostile.requests) <= 4
    assert "gave up after 3 s in all (2 x this file's limit of 0.5 s + its size at 1000 " \
           "bytes/s)" in str(e.value)
    assert "copy it to" in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_endless_body_is_cut_at_the_known_size(hostile, tmp_path):
    start = time.monotonic()
    with pytest.raises(data.DownloadError, match="more than the 1024 bytes expected"):
        data._download("f.bin", BODY_SHA, [hostile.url + "/endless"], tmp_path, timeout=1,
                       size=len(BODY), retries=0)
    assert time.monotonic() - start < 10
    assert list(tmp_path.iterdir()) == []


def test_endless_body_of_unknown_size_is_bounded(hostile, tmp_path, monkeypatch):
    monkeypatch.setattr(data, "MAX_UNKNOWN_SIZE", 200_000)
    with pytest.raises(data.DownloadError, match="more than the 200000 bytes"):
        data._download("f.bin", BODY_SHA, [hostile.url + "/endless"], tmp_path, timeout=1,
                       retries=0)
    assert list(tmp_path.iterdir()) == []
    # a body without Content-Length but within the limit is fine
    path = data._download("f.bin", BODY_SHA, [hostile.url + "/nolength"], tmp_path,
                          timeout=1, size=len(BODY), retries=0)
    assert path.read_bytes() == BODY


def test_broken_transfer_is_retried(hostile, tmp_path, monkeypatch):
    monkeypatch.setattr(data, "RETRY_WAIT", 0.0)
    with pytest.raises(data.DownloadError, match="connection closed after 500 of 1024"):
        data._download("f.bin", BODY_SHA, [hostile.url + "/flaky"], tmp_path, timeout=1,
                       size=len(BODY), retries=0)
    hostile.requests.clear()
    path = data._download("f.bin", BODY_SHA, [hostile.url + "/flaky"], tmp_path, timeout=1,
                          size=len(BODY), retries=1)
    assert path.read_bytes() == BODY and hostile.requests == ["/flaky", "/flaky"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]


def test_progress_bar_only_when_asked_or_on_a_terminal(hostile, tmp_path, capsys):
    data._download("a.bin", BODY_SHA, [hostile.url + "/ok"], tmp_path, timeout=1,
                   size=len(BODY))
    assert "a.bin" not in capsys.readouterr().err  # stderr is not a terminal here
    data._download("b.bin", BODY_SHA, [hostile.url + "/ok"], tmp_path, timeout=1,
                   size=len(BODY), progress=True)
    assert "b.bin" in capsys.readouterr().err


def test_stale_part_files_are_removed(hostile, tmp_path):
    old = tmp_path / ".f.bin.k1l2m3.part"
    fresh = tmp_path / ".f.bin.n4o5p6.part"  # perhaps another process's download
    for p in (old, fresh):
        p.write_bytes(b"half")
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))
    data._download("f.bin", BODY_SHA, [hostile.url + "/ok"], tmp_path, timeout=1,
                   size=len(BODY))
    assert sorted(p.name for p in tmp_path.iterdir()) == [fresh.name, "f.bin"]


# ----------------------------------------------------------------------------------------------
# a dataset registered from this file alone


def _toy_spec(files: dict, mirrors: tuple[str, ...] = ()) -> data.DatasetSpec:
    """A downloaded dataset: one .npy of (2, N, 3) float32 (x then y), scaled by ``scale``."""

    def parse(request: data.LoadRequest) -> data.Data:
        table = np.load(request.files["toy.npy"], allow_pickle=False)
        x = torch.from_numpy(table[0] * request.options["scale"])
        y = torch.from_numpy(table[1, :, 0].astype(np.int64))
        train = TensorDataset(x[:request.limit_train], y[:request.limit_train])
        test = TensorDataset(x[:request.limit_test], y[:request.limit_test])
        return data.Data(request.name, train, test, input_shape=(3,), num_classes=2,
                         classes=["a", "b"], description=f"toy, seed {request.seed}")

    return data.DatasetSpec(
        "toy-table", parse, "a test's table", files=files, mirrors=mirrors,
        options={"scale": data.DatasetOption.number(1.0, low=0, low_open=True)},
        aliases=("toytable",))


@pytest.fixture
def registry(monkeypatch):
    """A copy of the registry that this test may add to; the real one is left as it was."""
    monkeypatch.setattr(data, "_REGISTRY", dict(data._REGISTRY))
    return data._REGISTRY


def test_a_spec_registered_from_a_test_loads_through_load(server, registry, tmp_path):
    rng = np.random.default_rng(0)
    table = np.stack([rng.normal(size=(6, 3)), rng.integers(0, 2, size=(6, 3))]
                     ).astype(np.float32)
    (server.root / "toy-table").mkdir()
    np.save(server.root / "toy-table" / "toy.npy", table)
    data.register_dataset(_toy_spec(_registry(server.root / "toy-table"),
                                    mirrors=(server.url + "/toy-table/",)))
    assert "toy-table" in data.DATASETS and "toy-table" not in data.OFFLINE_DATASETS
    assert data.CHECKSUMS["toy-table"] == _registry(server.root / "toy-table")
    cache = tmp_path / "cache" / "toy-table"

    # options are checked before anything is downloaded or written
    with pytest.raises(ValueError, match=r"scale must be a finite number > 0, got 0 "):
        data.load("toy-table", scale=0)
    with pytest.raises(ValueError, match=r"unknown option\(s\) scal;.*did you mean scale"):
        data.load("toy-table", scal=2.0)
    with pytest.raises(ValueError, match=r"unknown option\(s\) n_train;"):
        data.load("toy-table", n_train=2)  # synthetic's option, not this one's
    with pytest.raises(ValueError, match="limit_train"):
        data.load("toy-table", limit_train=0)
    assert server.requests == [] and not cache.exists()

    d = data.load("Toy_Table", scale=2.0, limit_train=4, seed=3)
    assert d.name == "toy-table" and d.description == "toy, seed 3"
    assert torch.equal(d.train.tensors[0], torch.from_numpy(table[0, :4] * 2))
    assert d.train.tensors[1].tolist() == table[1, :4, 0].astype(int).tolist()
    assert len(d.test) == 6 and server.requests == ["/toy-table/toy.npy"]
    assert (cache / "toy.npy").read_bytes() == (server.root / "toy-table" / "toy.npy").read_bytes()

    again = data.load("toytable", download=False)  # from the verified cache
    assert torch.equal(again.train.tensors[0], torch.from_numpy(table[0]))
    (cache / "toy.npy").write_bytes(b"\x93NUMPY not the pinned file")
    with pytest.raises(data.DownloadError, match=r"toy\.npy: corrupted"):
        data.load("toy-table", download=False)


def test_an_offline_spec_gets_its_options_validated_with_defaults(registry):
    seen = []

    def parse(request: data.LoadRequest) -> data.Data:
        seen.append(dict(request.options))
        n = request.options["n"]
        x, y = torch.arange(n, dtype=torch.float32)[:, None], torch.arange(n) % 2
        return data.Data(request.name, TensorDataset(x, y), TensorDataset(x, y), (1,), 2,
                         ["even", "odd"], "counting")

    data.register_dataset(data.DatasetSpec(
        "counting", parse, options={"n": data.DatasetOption.integer(4, low=2)}))
    assert "counting" in data.OFFLINE_DATASETS and "counting" not in data.CHECKSUMS
    assert len(data.load("counting").train) == 4 and len(data.load("counting", n=7).train) == 7
    for bad in (1, 2.0, True, "5"):
        with pytest.raises(ValueError, match="n must be a whole number"):
            data.load("counting", n=bad)
    with pytest.raises(ValueError, match=r"unknown option.*timeout"):
        data.load("counting", timeout=3)  # downloads nothing
    assert seen == [{"n": 4}, {"n": 7}]


@pytest.mark.parametrize(("changes", "match"), [
    ({"name": "Toy Table"}, "lower case"),
    ({"files": {"toy.npy": ("00" * 31, 10)}}, r"files\['toy.npy'\] must pin"),
    ({"files": {"../toy.npy": ("00" * 32, 10)}}, "must pin a plain file name"),
    ({"files": {"toy.npy": ("00" * 32, True)}}, r"files\['toy.npy'\] must pin.*got \('0"),
    ({"options": {"timeout": data.DatasetOption.number(1.0, low=0)}}, "load's own"),
    ({"options": {"scale": 1.0}}, "must be a DatasetOption"),
    ({"mirrors": "https://example.org/"}, "tuple of base URLs"),
    ({"parse": None}, "parse must be a function"),
])
def test_bad_specs_are_refused(changes, match):
    with pytest.raises((ValueError, TypeError), match=match):
        dataclasses.replace(_toy_spec({"toy.npy": ("00" * 32, 10)}), **changes)


def test_register_refuses_a_taken_name_unless_replace(registry):
    before = dict(registry)
    with pytest.raises(ValueError, match=r"mnist already registered.*replace=True"):
        data.register_dataset(dataclasses.replace(data.dataset_spec("digits"), name="mnist"))
    with pytest.raises(ValueError, match="cifar-10 already registered"):
        data.register_dataset(dataclasses.replace(_toy_spec({}), aliases=("cifar-10",)))
    assert registry == before
    mine = dataclasses.replace(data.dataset_spec("mnist"), mirrors=("http://127.0.0.1:9/",))
    assert data.register_dataset(mine, replace=True) is data.dataset_spec("MNIST")
    assert data.MIRRORS["mnist"] == ("http://127.0.0.1:9/",)
    assert data.DATASETS == tuple(before)  # same names, same order
    with pytest.raises(TypeError):
        data.CHECKSUMS["mnist"] = {}  # the tables are views of the registry, read-only
    with pytest.raises(ValueError, match=r"unknown dataset 'mnsit'.*did you mean 'mnist'"):
        data.load("mnsit")


def test_split_validation_takes_any_fraction_in_the_open_interval_and_says_what_to_pass():
    full = data.load("synthetic", n_train=50, n_test=10, seed=0)
    split = full.split_validation(np.float32(0.2))
    assert len(split.val) == 10 and split.val_split["fraction"] == pytest.approx(0.2)
    assert type(split.val_split["fraction"]) is float  # JSON-ready, not a numpy scalar
    for bad, shown in ((True, r"True \(bool\)"), (float("nan"), r"nan \(float\)"),
                       (-0.1, r"-0.1 \(float\)")):
        with pytest.raises(ValueError, match=rf"^fraction must be a finite number > 0 and < 1, "
                                             rf"got {shown}; pass a fraction in \(0, 1\), e.g. "
                                             rf"0.1 for a tenth of the training set$"):
            full.split_validation(bad)
