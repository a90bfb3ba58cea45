"""Fashion-MNIST for the Flower example and its tests: found on disk, or fetched once from Debian.

Looked for in `$FASHION_MNIST_DIR`, Debian's `/usr/share/datasets/fashion-mnist` (package
`dataset-fashion-mnist`) and nnr's cache folder. `python -m nnr.testenv.fashion_mnist` fetches
that Debian package (pinned by size and SHA-256) into the cache and unpacks its four idx files, with
no root rights and no apt; nothing in the tests downloads data.
"""
import argparse
import hashlib
import io
import lzma
import os
import sys
import tarfile
import tempfile
import urllib.request

import numpy as np

from nnr.testenv.nncodec import cache_dir

FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
         "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
SYSTEM_DIR = "/usr/share/datasets/fashion-mnist"
# Debian 12 (bookworm), package dataset-fashion-mnist, as apt lists it
DEB_URL = ("http://deb.debian.org/debian/pool/main/d/dataset-fashion-mnist/"
           "dataset-fashion-mnist_0.0%7egit20200523.55506a9-1_all.deb")
DEB_SIZE = 30900652
DEB_SHA256 = "39e172fe32dd318ebb3e512220c3beea2fa47d7e20bab348fb4e0922d6beefc0"


def cached_dir():
    """Where `fetch` unpacks the data: <cache>/fashion-mnist."""
    return os.path.join(cache_dir(), "fashion-mnist")


def _complete(folder):
    return all(os.path.exists(os.path.join(folder, f)) or os.path.exists(os.path.join(folder, f[:-3]))
               for f in FILES)


def find():
    """The first folder holding the four idx files (gzipped or not), else None."""
    for folder in (os.environ.get("FASHION_MNIST_DIR"), SYSTEM_DIR, cached_dir()):
        if folder and _complete(folder):
            return folder
    return None


def read_idx(path):
    """An idx file (optionally gzipped): magic 0x0000 08 nd, then nd big-endian uint32 dims, uint8 data."""
    import gzip
    from pathlib import Path
    raw = gzip.open(path, "rb").read() if str(path).endswith(".gz") else Path(path).read_bytes()
    nd = raw[3]
    dims = [int(d) for d in np.frombuffer(raw[4:4 + 4 * nd], dtype=">u4")]
    return np.frombuffer(raw[4 + 4 * nd:], dtype=np.uint8).reshape(dims)


def load(data_dir=None):
    """(x_train, y_train, x_test, y_test): images float32 in [0, 1] of shape (n, 1, 28, 28), labels
    int64; from `data_dir`, else where find() finds them (FileNotFoundError naming the fetch command)."""
    data_dir = data_dir or find()
    if data_dir is None:
        raise FileNotFoundError("Fashion-MNIST not found: python -m nnr.testenv.fashion_mnist fetches it "
                                "(or set FASHION_MNIST_DIR to a folder holding its four idx files)")

    def f(stem):
        for name in (stem + ".gz", stem):
            if os.path.exists(os.path.join(data_dir, name)):
                return os.path.join(data_dir, name)
        raise FileNotFoundError(f"{os.path.join(data_dir, stem)}(.gz) not found")
    xtr = read_idx(f("train-images-idx3-ubyte")).astype(np.float32) / 255.0
    ytr = read_idx(f("train-labels-idx1-ubyte")).astype(np.int64)
    xte = read_idx(f("t10k-images-idx3-ubyte")).astype(np.float32) / 255.0
    yte = read_idx(f("t10k-labels-idx1-ubyte")).astype(np.int64)
    return xtr[:, None], ytr, xte[:, None], yte


def _ar_members(data):
    """{name: bytes} of a Debian package (an ar archive)."""
    if data[:8] != b"!<arch>\n":
        raise RuntimeError("not an ar archive")
    members, pos = {}, 8
    while pos + 60 <= len(data):
        header = data[pos:pos + 60]
        name = header[:16].decode().strip().rstrip("/")
        size = int(header[48:58].decode().strip())
        members[name] = data[pos + 60:pos + 60 + size]
        pos += 60 + size + (size & 1)
    return members


def fetch(*, log=print):
    """Fetch and unpack the Debian package into cached_dir() unless the data are found; the folder."""
    have = find()
    if have is not None:
        log(f"Fashion-MNIST found in {have}")
        return have
    log(f"fetching Fashion-MNIST from {DEB_URL} ({DEB_SIZE / 1e6:.1f} MB)")
    with urllib.request.urlopen(DEB_URL, timeout=300) as r:
        deb = r.read(DEB_SIZE + 1)
    digest = hashlib.sha256(deb).hexdigest()
    if len(deb) != DEB_SIZE or digest != DEB_SHA256:
        raise RuntimeError(f"the downloaded package has {len(deb)} bytes and SHA-256 {digest}; "
                           f"expected {DEB_SIZE} bytes and {DEB_SHA256}")
    data = _ar_members(deb).get("data.tar.xz")
    if data is None:
        raise RuntimeError("the package has no data.tar.xz")
    target = cached_dir()
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with tempfile.TemporaryDirectory(dir=os.path.dirname(target)) as tmp:
        with tarfile.open(fileobj=io.BytesIO(lzma.decompress(data))) as tar:
            for member in tar.getmembers():
                base = os.path.basename(member.name)
                if member.isfile() and base in FILES:
                    with open(os.path.join(tmp, base), "wb") as out:
                        out.write(tar.extractfile(member).read())
        if not _complete(tmp):
            raise RuntimeError("the package does not hold the four Fashion-MNIST files")
        os.makedirs(target, exist_ok=True)
        for f in FILES:
            os.replace(os.path.join(tmp, f), os.path.join(target, f))
    log(f"Fashion-MNIST unpacked into {target}")
    return target


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m nnr.testenv.fashion_mnist", description=__doc__.split("\n\n")[0])
    p.parse_args(argv)
    try:
        fetch()
    except (RuntimeError, OSError) as err:
        print(f"nnr.testenv.fashion_mnist: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
