"""A sharded collection on disk: ``shards.json`` beside one collection folder per shard.

``DIR/shards.json`` names the shards (``shard-0000`` ...), in document order, and what every
shard must share: the identity (encoder fingerprint, analyzer, chunking, legs) and the
encoder to load (its model name, when it has one). Each shard is an ordinary, self-contained
collection (`fastrag.Collection`), which can be opened, copied or served on its own.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastrag.collection import store

MANIFEST = "shards.json"
STATS_CACHE = "bm25-stats.json"  # the merged BM25 statistics, keyed by the shards' states
FORMAT = "fastrag.shards"
VERSION = 1

#: The settings every shard must share (from each shard's collection settings).
IDENTITY_KEYS = ("analyzer", "chunk_chars", "chunk_tokens", "storage", "sparse",
                 "late_chunking", "token_vectors")


class ShardError(RuntimeError):
    """A shard that cannot be used: missing, damaged or built differently from the others."""


class ShardMismatchError(ShardError, ValueError):
    """Shards built with another encoder, analyzer or chunking: their scores do not mix."""


class ShardMissingError(ShardError):
    """A shard that is not there (or failed) when `on_missing="error"`."""


class ShardMissingWarning(UserWarning):
    """Results come from some shards only (`on_missing="warn"`)."""


def shard_name(i: int) -> str:
    return f"shard-{i:04d}"


def identity_of(settings: dict[str, Any]) -> dict[str, Any]:
    """What must be equal across shards, from a collection's settings."""
    ident = {k: settings.get(k) for k in IDENTITY_KEYS}
    enc = settings.get("encoder")
    ident["encoder"] = None if not enc else {"fingerprint": enc.get("fingerprint"),
                                             "dim": enc.get("dim")}
    splade = settings.get("splade")
    ident["splade"] = None if not splade else splade.get("fingerprint")
    return ident


def read_identity(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The identity of the collection in `folder`, read from its database only."""
    db, settings = store.open_db(Path(folder))
    db.close()
    return identity_of(settings)


def check_same(identities: list[tuple[str, dict[str, Any]]]) -> None:
    """ShardMismatchError naming the first shard (and setting) that differs from the first."""
    if not identities:
        return
    first_name, first = identities[0]
    for name, ident in identities[1:]:
        for key in sorted(set(first) | set(ident)):
            if first.get(key) != ident.get(key):
                raise ShardMismatchError(
                    f"shard {name} was built with {key}={ident.get(key)!r} but {first_name} "
                    f"with {first.get(key)!r}: shards of another encoder or analyzer cannot be "
                    "searched or merged together; rebuild it with the same settings"
                )


@dataclass
class Manifest:
    """The contents of ``shards.json``."""

    shards: list[str]
    identity: dict[str, Any]
    encoder: dict[str, Any] | None = None  # {"model": name or None, "quantize": ...}
    documents: list[int] = field(default_factory=list)  # per shard

    def save(self, folder: Path) -> None:
        data = {"format": FORMAT, "version": VERSION, "shards": self.shards,
                "identity": self.identity, "encoder": self.encoder,
                "documents": self.documents}
        tmp = folder / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, folder / MANIFEST)

    @classmethod
    def load(cls, folder: str | os.PathLike[str]) -> Manifest:
        path = Path(folder) / MANIFEST
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ShardError(f"{folder} is not a sharded collection (no {MANIFEST})") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ShardError(f"{path} is damaged ({e})") from e
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ShardError(f"{path} is not a fastrag shard manifest")
        if int(data.get("version", 0)) > VERSION:
            raise ShardError(f"{path} needs a newer fastrag (version {data['version']})")
        shards = data.get("shards")
        if not isinstance(shards, list) or not all(isinstance(s, str) for s in shards):
            raise ShardError(f"{path} has no list of shards")
        return cls(shards=shards, identity=dict(data.get("identity") or {}),
                   encoder=data.get("encoder"), documents=list(data.get("documents") or []))


def load_stats(folder: Path, key: dict[str, Any]) -> tuple[int, float, dict[str, int]] | None:
    """The merged BM25 statistics cached in `folder` for exactly these shards in exactly
    these states (`key`: shard name -> its fingerprint), else None (no cache, another key,
    or a damaged file: the statistics are then merged again)."""
    try:
        data = json.loads((folder / STATS_CACHE).read_text(encoding="utf-8"))
        if data.get("format") != FORMAT + ".bm25-stats" or data.get("shards") != key:
            return None
        n, total, df = data["n"], data["total_len"], data["df"]
        if (isinstance(n, int) and isinstance(total, (int, float)) and isinstance(df, dict)
                and all(isinstance(v, int) for v in df.values())):
            return n, float(total), df
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    return None


def save_stats(folder: Path, key: dict[str, Any],
               stats: tuple[int, float, dict[str, int]]) -> bool:
    """Caches merged statistics for `key` (written under a temporary name, then renamed: a
    reader sees the old file or the new one). A folder that cannot be written keeps no cache
    (False)."""
    n, total, df = stats
    tmp = folder / f"{STATS_CACHE}.tmp-{os.getpid()}"
    try:
        tmp.write_text(json.dumps({"format": FORMAT + ".bm25-stats", "shards": key, "n": n,
                                   "total_len": total, "df": df}, ensure_ascii=False),
                       encoding="utf-8")
        os.replace(tmp, folder / STATS_CACHE)
        return True
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        return False


def is_sharded(folder: str | os.PathLike[str]) -> bool:
    return (Path(folder) / MANIFEST).is_file()
