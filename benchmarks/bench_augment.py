"""Meta Knowledge Summary augmentation end to end on cranfield, with a scripted LLM.

    python benchmarks/bench_augment.py            # every cranfield document and judged query
    python benchmarks/bench_augment.py --quick    # 400 documents, 50 queries
    python benchmarks/bench_augment.py --smoke    # tiny generated data
    # options: --json PATH, --data DIR, --model NAME (the collection's encoder, default
    #          "none": BM25 only; "default": MiniLM hybrid), --k K

No retrieval library offers this technique, so the peer is fastrag's own plain search on the
same collection in the same run. The LLM is `tests/llm_fake.ChatFake`, a real
OpenAI-compatible HTTP server on 127.0.0.1 that answers from the prompt: per document a JSON
object (its first content words as topic and tags, one question per tag), per cluster a
sentence naming the keywords, per query a numbered list of sub-questions cut from the query
(at " and ", ",", ";" or " or "; a query without one is split into its two halves). Its
answers are not a model's, so the nDCG@10 printed says that the plumbing retrieves, not how
well a real LLM would do.

Measured:
- `fastrag prepare` (`fastrag.collection.prepare.prepare`): requests, questions, clusters,
  seconds (loopback LLM time included), and a second run that asks nothing (resumed).
- Per query (`--k` results): the plain search and the augmented search (`augment="mk"`,
  explain on) of the same collection, interleaved; the added latency per query is the
  augmented time minus the LLM's own wall time (the client's `usage.seconds`, the HTTP round
  trip to the loopback server included) minus the plain search's time: the cost of picking the
  cluster, the extra retrievals (sub-questions and synthetic questions) and the fusion.
  Medians and means over the queries.
- That the plumbing works: sub-questions per query, the share of queries where a document
  was found by a sub-question only, every result explained (found_by, stages with fusion).
- Each failure mode (server down, a timeout, a malformed answer, an empty list) gives exactly
  the plain results with exactly one warning (`fallback_ok=1` when all four do).

The last line is a SUMMARY.
"""

from __future__ import annotations

import os
import re
import socket
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

from _common import REPO, Results, beir_dataset, optional, parse, parser

sys.path.insert(0, str(REPO / "tests"))  # the scripted chat server shared with the tests

from fastrag.collection import Collection
from fastrag.collection.prepare import prepare
from fastrag.search.augment import AugmentedResult
from fastrag.search.llm import ChatClient
from llm_fake import ChatFake

SPLIT = re.compile(r"\s+and\s+|\s*[,;]\s*|\s+or\s+")


def scripted_rewrite(query: str) -> str:
    """The scripted LLM's sub-questions: the query cut at its conjunctions, or halved."""
    parts = [p.strip(" ?.") for p in SPLIT.split(query) if len(p.split()) >= 3]
    if len(parts) < 2:
        words = query.strip(" ?.").split()
        half = max(1, len(words) // 2)
        parts = [" ".join(words[:half]), " ".join(words[half:])]
    return "Here are the questions:\n" + "\n".join(
        f"{i}. {p}?" for i, p in enumerate(parts[:5], 1) if p)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fallbacks(col: Collection, fake: ChatFake, queries: list[str], k: int,
              res: Results) -> int:
    """1 when every failure mode gives the plain results with exactly one warning."""
    ok = True
    modes = {
        "down": (ChatClient("scripted", base_url=f"http://127.0.0.1:{free_port()}/v1",
                            max_retries=0), []),
        "timeout": (ChatClient("scripted", base_url=fake.url, timeout=0.2, max_retries=0),
                    [("sleep", 0.6)]),
        "malformed": (ChatClient("scripted", base_url=fake.url, max_retries=0),
                      [("non_json",)]),
        "empty_list": (ChatClient("scripted", base_url=fake.url, max_retries=0),
                       [("text", "I could not think of any questions.")]),
    }
    for mode, (client, script) in modes.items():
        for q in queries:
            fake.script = list(script)
            plain = col.search(q, k=k)
            t0 = time.perf_counter()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                got = col.search(q, k=k, augment="mk", llm=client)
            seconds = time.perf_counter() - t0
            same = [(r.id, r.score) for r in got] == [(r.id, r.score) for r in plain]
            one = len(caught) == 1 and "fell back" in str(caught[0].message)
            ok = ok and same and one
        res.details.setdefault("fallback", {})[mode] = {
            "plain_results": same, "one_warning": one, "last_query_ms": seconds * 1e3}
        print(f"fallback {mode:<10}: plain results {same}, one warning {one}, "
              f"{seconds * 1e3:.1f} ms for the last query")
    return int(ok)


def main() -> None:
    ap = parser(__doc__, data=True)
    ap.add_argument("--model", default="none", help='the collection\'s encoder ("none": BM25)')
    ap.add_argument("--k", type=int, default=10)
    args = parse(ap)
    res = Results(__file__, args)
    data = beir_dataset(args.data, "cranfield", res)
    if data is None:
        res.finish()
        return
    ranx = optional("ranx", res, "nDCG@10 of plain and augmented runs")
    ids, texts = data.documents()
    keep = [i for i, t in enumerate(texts) if t.strip()]
    n_docs = {"smoke": len(keep), "quick": 400, "full": len(keep)}[args.mode]
    keep = keep[:n_docs]
    ids, texts = [ids[i] for i in keep], [texts[i] for i in keep]
    kept = set(ids)
    qids, queries = data.judged_queries()
    pairs = [(q, t) for q, t in zip(qids, queries, strict=True)
             if any(d in kept for d in data.qrels[q])]
    pairs = pairs[:{"smoke": 6, "quick": 50, "full": len(pairs)}[args.mode]]
    print(f"{len(ids)} documents, {len(pairs)} queries, encoder {args.model}")
    with tempfile.TemporaryDirectory() as tmp, ChatFake() as fake:
        fake.rewrite = scripted_rewrite
        encoder = None if args.model == "none" else args.model
        col = Collection.create(Path(tmp) / "cranfield", encoder=encoder)
        col.add(texts, ids=ids)
        col.commit()
        client = ChatClient("scripted", base_url=fake.url, concurrency=4)
        t0 = time.perf_counter()
        report = prepare(col, client)
        prepare_s = time.perf_counter() - t0
        again = prepare(col, ChatClient("scripted", base_url=fake.url))
        print(f"prepare: {report.as_dict()} in {prepare_s:.1f} s; again: {again.asked} asked, "
              f"{again.reused} reused")
        res.details["prepare"] = report.as_dict()

        llm = ChatClient("scripted", base_url=fake.url, max_retries=0, timeout=10)
        plain_ms, aug_ms, llm_ms, added_ms, n_sub = [], [], [], [], []
        sub_only = explained = 0
        plain_run: dict[str, dict[str, float]] = {}
        aug_run: dict[str, dict[str, float]] = {}
        for i, (q, text) in enumerate([pairs[0], *pairs]):  # the first one twice: warm-up
            t0 = time.perf_counter()
            plain = col.search(text, k=args.k)
            t1 = time.perf_counter()
            before = llm.usage.seconds
            found = col.search(text, k=args.k, augment="mk", llm=llm, explain=True)
            t2 = time.perf_counter()
            spent = llm.usage.seconds - before
            if i == 0:
                continue
            plain_run[q] = {r.id: r.score for r in plain}
            aug_run[q] = {r.id: r.score for r in found}
            plain_ms.append((t1 - t0) * 1e3)
            aug_ms.append((t2 - t1) * 1e3)
            llm_ms.append(spent * 1e3)
            added_ms.append(((t2 - t1) - spent - (t1 - t0)) * 1e3)
            aug = [r for r in found if isinstance(r, AugmentedResult)]
            n_sub.append(len(aug[0].subquestions) if aug else 0)
            sub_only += any(r.found_by and text not in r.found_by for r in aug)
            explained += bool(aug) and all(r.found_by and "fusion" in r.stages for r in aug)
        n = len(pairs)
        for name, values in [("plain", plain_ms), ("augmented", aug_ms), ("llm", llm_ms),
                             ("added", added_ms)]:
            print(f"{name:<10} ms per query: median {statistics.median(values):.2f}, "
                  f"mean {statistics.fmean(values):.2f}")
        res.summary.update(
            documents=len(ids), queries=n,
            prepare_requests=report.usage.requests, synthetic_questions=report.questions,
            clusters=report.clusters, prepare_s=round(prepare_s, 2),
            resumed_asked=again.asked,
            plain_ms_per_query=round(statistics.median(plain_ms), 3),
            augmented_ms_per_query=round(statistics.median(aug_ms), 3),
            llm_ms_per_query=round(statistics.median(llm_ms), 3),
            added_latency_ms_per_query=round(statistics.median(added_ms), 3),
            added_latency_ms_mean=round(statistics.fmean(added_ms), 3),
            subquestions_per_query=round(statistics.fmean(n_sub), 2),
            found_by_subquestion_only_share=round(sub_only / n, 3),
            explained_share=round(explained / n, 3),
        )
        if ranx is not None:
            from fastrag.eval import evaluate

            qrels = {q: data.qrels[q] for q, _ in pairs}
            for name, run in [("plain", plain_run), ("augmented", aug_run)]:
                score = evaluate(run, qrels, ["ndcg@10"])["ndcg@10"]
                res.summary[f"ndcg10_{name}_scripted"] = round(score, 4)
                print(f"nDCG@10 {name} (scripted LLM): {score:.4f}")
        res.summary["fallback_ok"] = fallbacks(col, fake, [t for _, t in pairs[:3]], args.k,
                                               res)
        col.close()
    res.finish()


if __name__ == "__main__":
    main()
