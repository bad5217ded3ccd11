"""Search time and memory of the service's gallery index (export/search_index.py) by size.

    python -m benchmarks.gallery_search [--sizes=10000,100000,1000000] [--dim=512]

For each size: random unit embeddings, 10 per identity, in the exact numpy index and, when
``faiss`` is installed, FAISS's ``IndexFlatIP``; the median time of one top-5 search over
``--probes`` probes (one probe at a time, as the service searches), the index's memory, and
the SQLite gallery's bytes per face (measured on 10,000 faces). One JSON line per size and
backend, then one line extrapolating linearly to 10^7 faces (exact search is linear in the
gallery size: a matrix-vector product over every row).
"""

import argparse
import os
import tempfile
import time

import numpy as np

from benchmarks import common
from export import gallery_store, search_index

PER_IDENTITY = 10


def unit_rows(n, dim, rng):
    rows = rng.standard_normal((n, dim), dtype=np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    return rows


def fill(index, embeddings):
    for start in range(0, len(embeddings), PER_IDENTITY):
        index.add(embeddings[start:start + PER_IDENTITY], f"id{start // PER_IDENTITY}")


def search_seconds(index, probes, top_k=5):
    index.search(probes[0], top_k)  # warm-up
    times = []
    for probe in probes:
        started = time.perf_counter()
        index.search(probe, top_k)
        times.append(time.perf_counter() - started)
    return float(np.median(times))


def store_bytes_per_face(dim, faces=10000):
    rng = np.random.default_rng(1)
    embeddings = unit_rows(faces, dim, rng)
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "g.db")
        with gallery_store.GalleryStore(path, "bench", dim) as store:
            for start in range(0, faces, PER_IDENTITY):
                store.enrol(f"id{start}", [(f"{start + i:064x}", None, e) for i, e in
                                           enumerate(embeddings[start:start + PER_IDENTITY])])
        size = sum(os.path.getsize(os.path.join(directory, n)) for n in os.listdir(directory))
    return size / faces


def run(sizes=(10_000, 100_000, 1_000_000), dim=512, probes=20):
    rng = np.random.default_rng(0)
    backends = ["numpy"] + (["faiss"] if search_index.faiss_module() is not None else [])
    per_face_disk = store_bytes_per_face(dim)
    results = []
    for size in sizes:
        embeddings = unit_rows(size, dim, rng)
        queries = unit_rows(probes, dim, rng)
        for backend in backends:
            index = search_index.make_index(dim, backend)
            fill(index, embeddings)
            seconds = search_seconds(index, queries)
            figures = {"faces": size, "backend": backend, "dim": dim,
                       "search_ms": common.rounded(seconds * 1000, 4),
                       "index_mib": common.rounded(size * dim * 4 / 2 ** 20, 3),
                       "sqlite_bytes_per_face": common.rounded(per_face_disk, 0)}
            common.emit("gallery_search", figures)
            results.append(figures)
            del index
        del embeddings
    largest = max(sizes)
    for backend in backends:
        measured = [r for r in results if r["backend"] == backend and r["faces"] == largest]
        if measured:
            common.emit("gallery_search", {
                "faces": 10_000_000, "backend": backend, "dim": dim, "extrapolated": True,
                "search_ms": common.rounded(measured[0]["search_ms"] * 1e7 / largest, 1),
                "index_mib": common.rounded(1e7 * dim * 4 / 2 ** 20, 0)})
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--probes", type=int, default=20)
    args = parser.parse_args(argv)
    run([int(s) for s in args.sizes.split(",")], args.dim, args.probes)


if __name__ == "__main__":
    main()
