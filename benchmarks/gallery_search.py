"""Search time and memory of the service's gallery index (export/search_index.py) by size.

    python -m benchmarks.gallery_search [--sizes=10000,100000,1000000] [--dim=512]

For each size: random unit embeddings, 10 per identity, in the exact numpy index and, when
``faiss`` is installed, FAISS's ``IndexFlatIP``; the median time of one top-5 search over
``--probes`` probes (one probe at a time, as the service searches) and the index's memory.
First one line on the SQLite gallery (``--store_faces`` faces): bytes per face, enrolment time
per face (one identity of 10 per transaction) and the start-up time (read the file, build the
numpy index), also per million faces. One JSON line per size and
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


def store_timings(faces, dim):
    """``(bytes per face, enrol seconds per face, start-up seconds)`` of a SQLite gallery of
    ``faces`` random embeddings, 10 per identity: enrolled one identity per transaction, then
    read back into the numpy index as the service does at start."""
    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "g.db")
        started = time.perf_counter()
        with gallery_store.GalleryStore(path, "bench", dim) as store:
            for start in range(0, faces, PER_IDENTITY):
                rows = unit_rows(PER_IDENTITY, dim, rng)
                store.enrol(f"id{start}", [(f"{start + i:064x}", None, e)
                                           for i, e in enumerate(rows)])
        enrol_seconds = time.perf_counter() - started
        size = sum(os.path.getsize(os.path.join(directory, n)) for n in os.listdir(directory))
        started = time.perf_counter()
        with gallery_store.GalleryStore(path, "bench", dim) as store:
            names, _, embeddings = store.faces()
            search_index.ExactIndex(dim).add_rows(embeddings, names)
        startup = time.perf_counter() - started
    return size / faces, enrol_seconds / faces, startup


def run(sizes=(10_000, 100_000, 1_000_000), dim=512, probes=20, store_faces=10_000):
    rng = np.random.default_rng(0)
    backends = ["numpy"] + (["faiss"] if search_index.faiss_module() is not None else [])
    per_face_disk, enrol_per_face, startup = store_timings(store_faces, dim)
    common.emit("gallery_store", {
        "faces": store_faces, "dim": dim, "bytes_per_face": common.rounded(per_face_disk, 0),
        "enrol_ms_per_face": common.rounded(enrol_per_face * 1000, 4),
        "startup_s": common.rounded(startup, 3),
        "startup_s_per_million": common.rounded(startup * 1e6 / store_faces, 1)})
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
                       "index_mib": common.rounded(size * dim * 4 / 2 ** 20, 3)}
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
    parser.add_argument("--store_faces", type=int, default=100_000)
    args = parser.parse_args(argv)
    run([int(s) for s in args.sizes.split(",")], args.dim, args.probes, args.store_faces)


if __name__ == "__main__":
    main()
