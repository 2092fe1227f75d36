"""Write the offline datasets that ship inside the wheel, under ``ttqlab/_data/``.

    pip install "ttqlab[datasets]"          # mnist1d and scikit-learn: the upstream generators
    python tools/make_package_data.py       # writes ttqlab/_data/*.npz, prints their SHA-256
    python tools/make_package_data.py --check   # exit 1 unless the files are what it would write

Two files, so that ``pip install ttqlab`` loads the course's default datasets without
scikit-learn or mnist1d (and their matplotlib, scipy, requests, ...):

* ``digits.npz``: scikit-learn's ``load_digits()`` table, the 1797 8x8 images of the UCI
  "Optical Recognition of Handwritten Digits" test set, as ``images`` (1797, 64) uint8
  (the pixels are integer counts 0..16, stored exactly) and ``target`` (1797,) uint8.
  ``ttqlab.data.load("digits", seed=s)`` splits it for any seed, bit for bit as
  scikit-learn's ``train_test_split(..., test_size=0.25, stratify=y, random_state=s)``.
* ``mnist1d-n5000-seed0.npz``: ``mnist1d.data.make_dataset`` with its default arguments,
  ``num_samples=5000`` and ``seed=0``: ``x_train`` (4000, 40) float32, ``y_train`` (4000,)
  uint8, ``x_test`` (1000, 40) float32, ``y_test`` (1000,) uint8, i.e. exactly what
  ``ttqlab.data.load("mnist1d")`` returns (labels widened to int64 on load). Other seeds
  still need the generator (the ``datasets`` extra).

The files are written deterministically (fixed zip timestamps, fixed member order), so the
same upstream versions give the same bytes; the ``package_data`` of the "digits" and
"mnist1d" specs at the end of ttqlab/data.py pin their SHA-256 and sizes (paste the lines
this script prints there; `ttqlab.data.PACKAGE_DATA` lists them all), checked on every load.
The upstream licenses are copied next to them (``LICENSE-mnist1d``, ``LICENSE-scikit-learn``)
and ``README.md`` there credits the sources.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's ttqlab, installed or not
OUT = ROOT / "ttqlab" / "_data"
MNIST1D_SAMPLES, MNIST1D_SEED = 5000, 0


def digits_arrays() -> dict[str, np.ndarray]:
    """scikit-learn's digits table as uint8 (every pixel is an integer 0..16)."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    images = x.astype(np.uint8)
    if not np.array_equal(images.astype(x.dtype), x) or y.min() < 0 or y.max() > 9:
        raise SystemExit("load_digits() is not integer pixels 0..16 and labels 0..9 any more")
    return {"images": images, "target": y.astype(np.uint8)}


def mnist1d_arrays() -> dict[str, np.ndarray]:
    """``make_dataset`` with mnist1d's default arguments, 5000 samples, seed 0
    (`ttqlab.data.generate_mnist1d`, the generator ``load("mnist1d", seed=s)`` uses), the
    labels (0..9) stored as uint8."""
    from ttqlab.data import generate_mnist1d

    arrays = generate_mnist1d(MNIST1D_SEED, num_samples=MNIST1D_SAMPLES)
    return {k: v.astype(np.uint8) if k.startswith("y") else v for k, v in arrays.items()}


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """A compressed .npz with fixed timestamps: the same arrays always give the same bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name, array in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            z.writestr(info, member.getvalue(), compresslevel=9)
    return buffer.getvalue()


def _license(dist: str, names: tuple[str, ...]) -> str:
    files = metadata.distribution(dist).files or []
    for f in files:
        if Path(str(f)).name in names:
            return f.read_text()
    raise SystemExit(f"{dist}'s license file ({' or '.join(names)}) is not installed")


def outputs() -> dict[str, bytes]:
    return {
        "digits.npz": npz_bytes(digits_arrays()),
        f"mnist1d-n{MNIST1D_SAMPLES}-seed{MNIST1D_SEED}.npz": npz_bytes(mnist1d_arrays()),
        "LICENSE-mnist1d": _license("mnist1d", ("LICENSE",)).encode(),
        "LICENSE-scikit-learn": _license("scikit-learn", ("COPYING", "LICENSE")).encode(),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true",
                    help="write nothing; exit 1 if a file differs from what would be written")
    args = ap.parse_args(argv)
    print(f"mnist1d {metadata.version('mnist1d')}, scikit-learn {metadata.version('scikit-learn')}"
          f", numpy {np.__version__}")
    OUT.mkdir(exist_ok=True)
    differ = []
    for name, blob in outputs().items():
        path = OUT / name
        if args.check:
            if not path.is_file() or path.read_bytes() != blob:
                differ.append(name)
        else:
            path.write_bytes(blob)
        if name.endswith(".npz"):
            print(f'    "{name}": ("{hashlib.sha256(blob).hexdigest()}", {len(blob)}),')
    if differ:
        print(f"differ from what this script writes: {', '.join(differ)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
