"""Japanese BERT tokenization: fastrag's fast tokenizer against transformers' BertJapaneseTokenizer.

    python benchmarks/bench_ja_tokenizer.py [--quick | --smoke] [--json PATH] [--data DIR]
                                            [--rounds 5]

Japanese BERTs of the cl-tohoku v3 family (Ruri v1/v2) split words with MeCab and then into
WordPiece pieces; transformers has only a slow, pure-Python tokenizer for them. fastrag's
(`fastrag.text.ja_wordpiece`) is a `tokenizers.Tokenizer` whose word splitter calls MeCab
(fugashi + unidic-lite) from Rust's pre-tokenization step. Both tokenize the same texts: the
jsquad-valid paragraphs and questions (``--data``), with a vocabulary built here from the MeCab
words of every other paragraph, their characters and the characters as ``##`` continuations
(no model is downloaded; a real vocabulary has 32,768 entries, this one is what the texts
need). Every text's ids must agree before anything is timed.

Timed, in a rotating order for several rounds (best sample of at least 0.2 s counts): fastrag's
``encode_batch`` of all texts (the encoders' call: one text after another on the calling
thread), the same tokenizer through tokenizers' own threaded ``Tokenizer.encode_batch`` (its
worker threads queue for the GIL the Python word splitter needs), transformers'
``tokenizer(texts)``, and fugashi alone parsing the NFKC-normalised texts (the MeCab part all
pay, for context). The SUMMARY gives texts per second and the ratios to transformers and to
the threaded call (> 1: fastrag's encode_batch faster). --quick:
300 paragraphs and 300 questions, 3 rounds; --smoke: the tiny generated collection, 1 round.
"""

from __future__ import annotations

import json
import tempfile
import unicodedata
from pathlib import Path

from tokenizers import Tokenizer

from _common import Results, best_times, optional, parse, parser
from fastrag.text import ja_wordpiece

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def read_texts(folder: Path, limit: int | None) -> list[str]:
    """Paragraphs then questions of a BEIR folder, `limit` of each (all when None)."""
    texts = []
    for name in ("corpus.jsonl", "queries.jsonl"):
        with (folder / name).open(encoding="utf-8") as f:
            rows = [json.loads(line)["text"] for line in f if line.strip()]
        texts += rows[:limit] if limit else rows
    return texts


def write_vocab(texts: list[str], path: Path) -> int:
    """vocab.txt from the MeCab words of every other text and all characters; its size."""
    words = ja_wordpiece._MecabWords(ja_wordpiece.WordSplitter())
    found: set[str] = set()
    chars: set[str] = set()
    for i, text in enumerate(texts):
        norm = unicodedata.normalize("NFKC", text)
        chars.update(c for c in norm if not c.isspace())
        if i % 2 == 0:
            found.update(s for _, _, s in words.words(norm) if not any(c.isspace() for c in s))
    tokens = list(dict.fromkeys(
        [*SPECIALS, *sorted(found), *sorted(chars), *sorted("##" + c for c in chars)]
    ))
    path.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return len(tokens)


def main() -> None:
    ap = parser(__doc__, data=True)
    ap.add_argument("--rounds", type=int, default=5)
    args = parse(ap)
    res = Results(__file__, args, peers=("transformers", "fugashi", "unidic-lite"))
    limit = {"smoke": None, "quick": 300, "full": None}[args.mode]
    rounds = 1 if args.smoke else 3 if args.quick else args.rounds
    folder = args.data / "jsquad-valid"
    transformers = optional("transformers", res, "the transformers peer")
    fugashi = optional("fugashi", res, "everything (fastrag needs it too)")
    if not (folder / "corpus.jsonl").is_file() or transformers is None or fugashi is None:
        res.skip(f"no {folder} or no transformers / fugashi: nothing to compare")
        res.summary["texts"] = 0
        res.finish()
        return
    texts = read_texts(folder, limit)
    with tempfile.TemporaryDirectory() as tmp:
        vocab = Path(tmp) / "vocab.txt"
        size = write_vocab(texts, vocab)
        slow = transformers.BertJapaneseTokenizer(
            str(vocab), word_tokenizer_type="mecab", mecab_kwargs={"mecab_dic": "unidic_lite"}
        )
    fast = ja_wordpiece.attach(*ja_wordpiece.fast_from_slow(slow))
    want = slow(texts)["input_ids"]
    got = [enc.ids for enc in fast.encode_batch(texts)]
    wrong = sum(a != b for a, b in zip(want, got, strict=True))
    if wrong:
        raise SystemExit(f"{wrong} of {len(texts)} texts tokenize otherwise than transformers")
    tagger = ja_wordpiece._MecabWords(ja_wordpiece.WordSplitter())
    normalized = [unicodedata.normalize("NFKC", t) for t in texts]

    engines = {
        "fastrag encode_batch": lambda: fast.encode_batch(texts),
        "tokenizers' threaded encode_batch, same tokenizer": (
            lambda: Tokenizer.encode_batch(fast, texts)
        ),
        f"transformers {transformers.__version__} BertJapaneseTokenizer": lambda: slow(texts),
        "fugashi alone (MeCab words)": lambda: [tagger.words(t) for t in normalized],
    }
    best = best_times(engines, rounds, min_s=0.01 if args.smoke else 0.2)
    chars = sum(len(t) for t in texts)
    tokens = sum(len(ids) for ids in got)
    print(f"{len(texts)} texts, {chars} characters, {tokens} tokens; vocabulary {size}; "
          f"ids identical for every text; best of {rounds}")
    per_s = {name: len(texts) / best[name] for name in engines}
    names = list(engines)
    for name in names:
        print(f"  {name:48s} {best[name] * 1e3:9.1f} ms  {per_s[name]:9.0f} texts/s")
    ours, threaded, peer, mecab = (per_s[n] for n in names)
    res.summary.update({
        "texts": len(texts),
        "tokens": tokens,
        "mismatches": wrong,
        "fastrag_texts_per_s": round(ours, 1),
        "transformers_texts_per_s": round(peer, 1),
        "mecab_texts_per_s": round(mecab, 1),
        "threaded_texts_per_s": round(threaded, 1),
        "speed_ratio_vs_transformers": round(ours / peer, 2),
        "mecab_share_of_fastrag": round(ours / mecab, 2),
        "speed_ratio_vs_threaded": round(ours / threaded, 2),
    })
    res.details["seconds"] = best
    res.finish()


if __name__ == "__main__":
    main()
