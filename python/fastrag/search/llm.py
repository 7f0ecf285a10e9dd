"""A client for OpenAI-compatible chat APIs (stdlib only): the LLM behind query rewriting.

``POST {base_url}/chat/completions`` with ``{"model", "messages", ...}``, answered by
``{"choices": [{"message": {"content": ...}}], "usage": {...}}``: OpenAI and the servers that
copy it (Ollama's ``/v1``, vLLM, llama.cpp's ``llama-server``, LiteLLM, hosted APIs)::

    llm = ChatClient("qwen2.5:7b", base_url="http://localhost:11434/v1")
    text = llm.chat([{"role": "user", "content": "Say hi"}])
    print(llm.usage)  # requests, cached answers, prompt / completion tokens, seconds

Retries (429, 5xx, dropped connections, timeouts; backoff with jitter, ``Retry-After``) and
bounded concurrency come from `fastrag._http.JsonClient`. With `cache_dir`, every answer is
kept on disk under the SHA-256 of (model, messages, parameters) and never asked again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fastrag._http import HttpClientError, JsonClient, positive_int

__all__ = ["ChatClient", "LLMError", "Usage"]

logger = logging.getLogger(__name__)

Message = Mapping[str, str]


class LLMError(HttpClientError):
    """The chat server could not be reached, refused the request or answered nonsense.

    Attributes:
        status: the HTTP status of the last answer, or None (no answer, or a malformed one).
        attempts: how many requests were sent, or None.
    """


@dataclass
class Usage:
    """What a `ChatClient` has spent so far.

    Attributes:
        requests: chat answers received from the server.
        cached: answers read from the disk cache instead (no request).
        prompt_tokens: input tokens, as the server reported them.
        completion_tokens: output tokens, as the server reported them.
        seconds: wall time spent waiting for the server (requests only).
    """

    requests: int = 0
    cached: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total_tokens": self.total_tokens}


class ChatClient(JsonClient):
    """Chat completions from an OpenAI-compatible HTTP API.

    Args:
        model: the model name sent with every request (e.g. ``"gpt-4o-mini"``,
            ``"qwen2.5:7b"`` for Ollama).
        base_url: the API root, ``/chat/completions`` is appended (e.g.
            ``http://localhost:11434/v1``); None reads ``OPENAI_BASE_URL``.
        api_key: sent as ``Authorization: Bearer <key>``; None reads ``OPENAI_API_KEY``; no
            header is sent when neither is set (local servers).
        temperature: sampling temperature (0: as repeatable as the server allows).
        max_tokens: the longest answer asked for.
        cache_dir: a folder for answers on disk (None: no cache).
        concurrency: how many requests `chat_many` keeps in flight.
        max_retries: extra attempts for a request that failed transiently.
        timeout: seconds to wait for the server (connect, and each read) per request.
        backoff: base pause in seconds before a retry (doubling, with jitter, at most 30 s).

    Raises:
        ValueError: no base URL (neither given nor in ``OPENAI_BASE_URL``), or a bad option.
        LLMError: (from `chat`) unreachable server, an error status, or an answer without
            a text in ``choices[0].message.content``.
    """

    _error = LLMError
    _label = "chat"
    _user_agent = "fastrag-chat"
    _logger = logger

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        temperature: float = 0.0,
        max_tokens: int = 512,
        cache_dir: str | os.PathLike[str] | None = None,
        concurrency: int = 4,
        max_retries: int = 2,
        timeout: float = 60.0,
        backoff: float = 0.5,
    ) -> None:
        if not isinstance(model, str) or not model.strip():
            raise ValueError(f"model must be a non-empty str, got {model!r}")
        url = base_url if base_url is not None else os.environ.get("OPENAI_BASE_URL")
        if not url:
            raise ValueError("no LLM server: pass base_url (or --base-url) or set "
                             "OPENAI_BASE_URL, e.g. http://localhost:11434/v1 for Ollama")
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {url!r}")
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not (
                0.0 <= temperature <= 2.0):
            raise ValueError(f"temperature must be a number in [0, 2], got {temperature!r}")
        self._init_http(
            api_key=api_key if api_key is not None else os.environ.get("OPENAI_API_KEY"),
            max_retries=max_retries, timeout=timeout, backoff=backoff,
        )
        self.model = model
        self.name = model
        self.base_url = url.rstrip("/")
        self.url = f"{self.base_url}/chat/completions"
        self.temperature = float(temperature)
        self.max_tokens = positive_int(max_tokens, "max_tokens")
        self.concurrency = positive_int(concurrency, "concurrency")
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self._usage = Usage()
        self._usage_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.model!r}, base_url={self.base_url!r})"

    @property
    def usage(self) -> Usage:
        """A copy of what was spent so far (requests, cache hits, tokens, seconds)."""
        with self._usage_lock:
            return Usage(**asdict(self._usage))

    # -- chatting ---------------------------------------------------------------------------

    def chat(self, messages: Sequence[Message]) -> str:
        """The assistant's answer to `messages` (``[{"role": ..., "content": ...}]``)."""
        return self._answer(_checked_messages(messages), threading.Event())

    def chat_many(self, conversations: Sequence[Sequence[Message]]) -> list[str]:
        """`chat` for many conversations, up to `concurrency` at once, answers in order.

        The first failure is raised (the others stop retrying)."""
        checked = [_checked_messages(m) for m in conversations]
        answers = self._run_batches(
            list(range(len(checked))), lambda i, stop: self._answer(checked[i], stop),
            "fastrag-chat")
        return [answers[i] for i in range(len(checked))]

    def _payload(self, messages: list[dict[str, str]]) -> dict[str, Any]:
        return {"model": self.model, "messages": messages,
                "temperature": self.temperature, "max_tokens": self.max_tokens}

    def cache_key(self, messages: Sequence[Message]) -> str:
        """The SHA-256 (hex) of the model, the messages and the sampling parameters."""
        payload = self._payload(_checked_messages(messages))
        text = json.dumps(payload, ensure_ascii=False, sort_keys=True)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def forget(self, messages: Sequence[Message]) -> None:
        """Drops the cached answer to `messages` (an answer found useless is asked again)."""
        path = self._path(self.cache_key(messages))
        if path is not None:
            path.unlink(missing_ok=True)

    def _answer(self, messages: list[dict[str, str]], stop: threading.Event) -> str:
        key = self.cache_key(messages) if self.cache_dir is not None else ""
        cached = self._cached(key)
        if cached is not None:
            with self._usage_lock:
                self._usage.cached += 1
            return cached
        t0 = time.perf_counter()
        try:
            answer = self._post(self._payload(messages), stop)
        finally:
            elapsed = time.perf_counter() - t0
            with self._usage_lock:
                self._usage.seconds += elapsed
        text, prompt, completion = self._content(answer)
        with self._usage_lock:
            self._usage.requests += 1
            self._usage.prompt_tokens += prompt
            self._usage.completion_tokens += completion
        self._store(key, text)
        return text

    def _content(self, answer: Any) -> tuple[str, int, int]:
        """(text, prompt tokens, completion tokens) of a chat completion."""
        try:
            text = answer["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            text = None
        if not isinstance(text, str):
            raise LLMError(f"{self.url} answered without choices[0].message.content: "
                           f"{json.dumps(answer, ensure_ascii=False)[:200]}")
        usage = answer.get("usage") if isinstance(answer, dict) else None
        usage = usage if isinstance(usage, dict) else {}
        return text, _count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens"))

    # -- the disk cache ---------------------------------------------------------------------

    def _path(self, key: str) -> Path | None:
        """The cache file of `key` (None without a cache)."""
        if not key or self.cache_dir is None:
            return None
        return self.cache_dir / key[:2] / f"{key}.json"

    def _cached(self, key: str) -> str | None:
        path = self._path(key)
        if path is None:
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None  # absent, or torn by a crash: asked again
        content = data.get("content") if isinstance(data, dict) else None
        return content if isinstance(content, str) else None

    def _store(self, key: str, text: str) -> None:
        """Writes the answer atomically (a temporary file renamed over the name)."""
        path = self._path(key)
        if path is None:
            return
        tmp = ""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"model": self.model, "content": text}, f, ensure_ascii=False)
            os.replace(tmp, path)
        except OSError as e:  # a cache that cannot be written costs requests, not answers
            logger.warning("could not cache an LLM answer in %s: %s", path.parent, e)
            if tmp:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)


def _checked_messages(messages: Sequence[Message]) -> list[dict[str, str]]:
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence) or not messages:
        raise TypeError("messages must be a non-empty list of {'role', 'content'} dicts")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping) or not isinstance(m.get("role"), str) or not isinstance(
                m.get("content"), str):
            raise TypeError(f"messages[{i}] must be a dict with str 'role' and 'content'")
        out.append({"role": m["role"], "content": m["content"]})
    return out


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
