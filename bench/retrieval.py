"""Retrieval benchmark: recall@5 of each embedder on labelled ledger queries, and query latency at 100,000
stored vectors.

    .venv/bin/python bench/retrieval.py                # every embedder that can load here
    .venv/bin/python bench/retrieval.py --only hashing

Documents are the 22 entries of ``tests/fixtures/BUILD_HISTORY.md`` (title, summary and impact, as the
ledger parser repairs them); queries and their relevant entries are in ``bench/retrieval_queries.json``.
recall@5 is the mean over queries of |relevant ∩ top 5| / |relevant|; hit@1 is the share of queries whose
first result is relevant. For latency the 22 real vectors sit among 99,978 random unit vectors in the same
faiss index type that ``research.memory`` uses (IndexIDMap2 over IndexFlatIP); a query's latency is
embedding it plus searching for the top 5. The semantic embedder is skipped, with the reason printed, when
its optional extra is not installed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import faiss
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from research.embedders import EmbedderUnavailable, get_embedder  # noqa: E402
from research.ledger import decode_ledger, parse_ledger  # noqa: E402

SEARCH_THREADS = 1  # research.memory.SEARCH_THREADS (not imported: that module needs Django settings)

LEDGER = ROOT / "tests" / "fixtures" / "BUILD_HISTORY.md"
QUERIES = Path(__file__).resolve().parent / "retrieval_queries.json"
TOTAL_VECTORS = 100_000
TOP_K = 5


def documents() -> tuple[list[str], list[str]]:
    entries = parse_ledger(decode_ledger(LEDGER.read_bytes())).entries
    titles = [entry.title for entry in entries]
    texts = [f"{entry.build_id}: {entry.title}\n{entry.summary}\n{entry.impact}"[:2000] for entry in entries]
    return titles, texts


def recall_at_k(embedder, titles: list[str], texts: list[str], queries: list[dict]) -> tuple[float, float]:
    index = faiss.IndexIDMap2(faiss.IndexFlatIP(embedder.dim))
    index.add_with_ids(embedder.embed(texts), np.arange(len(texts), dtype=np.int64))
    _, found = index.search(embedder.embed([query["query"] for query in queries]), TOP_K)
    recalls, hits = [], []
    for query, row in zip(queries, found, strict=True):
        top = [titles[i] for i in row if i >= 0]
        relevant = set(query["relevant"])
        recalls.append(len(relevant & set(top)) / len(relevant))
        hits.append(top[0] in relevant)
    return statistics.mean(recalls), statistics.mean(hits)


def latency_ms(embedder, texts: list[str], queries: list[dict]) -> tuple[float, float, float]:
    """(p50, p95, mean search-only) in milliseconds over the labelled queries, repeated 3 times."""
    rng = np.random.default_rng(42)
    filler = rng.standard_normal((TOTAL_VECTORS - len(texts), embedder.dim), dtype=np.float32)
    filler /= np.linalg.norm(filler, axis=1, keepdims=True)
    index = faiss.IndexIDMap2(faiss.IndexFlatIP(embedder.dim))
    index.add_with_ids(np.vstack([embedder.embed(texts), filler]), np.arange(TOTAL_VECTORS, dtype=np.int64))
    assert index.ntotal == TOTAL_VECTORS
    totals, searches = [], []
    for _ in range(3):
        for query in queries:
            started = time.perf_counter()
            vector = embedder.embed([query["query"]])
            embedded = time.perf_counter()
            index.search(vector, TOP_K)
            finished = time.perf_counter()
            totals.append((finished - started) * 1000)
            searches.append((finished - embedded) * 1000)
    totals.sort()
    return statistics.median(totals), totals[int(len(totals) * 0.95) - 1], statistics.mean(searches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=["hashing", "semantic"], help="Benchmark one embedder")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    queries = json.loads(QUERIES.read_text(encoding="utf-8"))["queries"]
    titles, texts = documents()
    print(f"{len(texts)} ledger entries, {len(queries)} labelled queries, latency at {TOTAL_VECTORS:,} vectors")
    faiss.omp_set_num_threads(SEARCH_THREADS)  # as research.memory runs it
    print(
        f"faiss threads: {faiss.omp_get_max_threads()}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    for kind in [args.only] if args.only else ["hashing", "semantic"]:
        try:
            embedder = get_embedder(kind)
        except EmbedderUnavailable as exc:
            print(f"{kind}: skipped — {exc}")
            continue
        recall, hit = recall_at_k(embedder, titles, texts, queries)
        p50, p95, search_mean = latency_ms(embedder, texts, queries)
        print(
            f"{embedder.name}: recall@{TOP_K} {recall:.3f}, hit@1 {hit:.3f}; query latency (embed + top-{TOP_K} "
            f"search) p50 {p50:.2f} ms, p95 {p95:.2f} ms; search alone mean {search_mean:.2f} ms"
        )


if __name__ == "__main__":
    main()
