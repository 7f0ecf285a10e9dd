"""A scripted OpenAI-compatible chat server on 127.0.0.1 (no other network).

`ChatFake` answers ``POST /v1/chat/completions`` like the real servers do (choices, usage).
What it says comes from the prompt fastrag sent: a metadata prompt gets a JSON object made
from the document (its words as tags, a question per tag), a summary prompt a sentence naming
the keywords, a rewrite prompt the numbered list in `rewrites` for that question (or `rewrite`
called with it). `script` overrides the next answers (see `http_fake.ScriptedServer`), plus
``("text", s)``: answer with content `s`.

Used by tests/test_augment*.py and benchmarks/bench_augment.py.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any

from http_fake import ScriptedServer

STOP = frozenset(re.findall(r"\w+", "a an and are as at be by for from in is it of on or "
                                   "that the this to was were which with what how does do"))


def words(text: str) -> list[str]:
    """The distinct content words of `text`, in order."""
    found = [w for w in re.findall(r"[a-z][a-z0-9]+", text.lower()) if w not in STOP]
    return list(dict.fromkeys(found))


def document_json(text: str, n: int) -> str:
    """The metadata answer for a document: its first words as topic and tags, a question
    about each of its first `n` tags."""
    ws = words(text) or ["misc"]
    tags = ws[:4]
    qa = [{"q": f"what is said about {w} and {ws[(i + 4) % len(ws)]}?", "a": w}
          for i, w in enumerate(tags[:n])]
    return json.dumps({"topic": ws[0], "tags": tags, "qa": qa})


class ChatFake(ScriptedServer):
    """The chat endpoint (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.rewrites: dict[str, str] = {}
        self.rewrite: Callable[[str], str] = lambda q: f"1. {q}"

    @property
    def url(self) -> str:
        return self.root + "/v1"

    def content_for(self, prompt: str) -> str:
        if "JSON" in prompt:
            m = re.search(r"up to (\d+)|（(\d+)個まで", prompt)
            n = int(m.group(1) or m.group(2)) if m else 3
            text = re.split(r"Document:\n|文書:\n", prompt, maxsplit=1)[-1]
            return "Sure, here it is:\n```json\n" + document_json(text, n) + "\n```"
        if "Keywords:" in prompt or "キーワード:" in prompt:
            tags = prompt.split("Keywords:", 1)[-1].split("\n", 1)[0]
            return f"These documents are about{tags}."
        for marker in ("User question:\n", "ユーザーの質問:\n"):
            if marker in prompt:
                query = prompt.split(marker, 1)[1].strip()
                return self.rewrites.get(query) or self.rewrite(query)
        return "I do not understand."

    def respond(self, handler: BaseHTTPRequestHandler, body: Any,
                action: tuple[Any, ...]) -> None:
        if self.scripted(handler, action):
            return
        if handler.path != "/v1/chat/completions":
            self.send(handler, 404, b'{"error": {"message": "not found"}}')
            return
        prompt = body["messages"][-1]["content"]
        content = action[1] if action[0] == "text" else self.content_for(prompt)
        answer = {
            "id": "chatcmpl-1", "object": "chat.completion", "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": len(prompt.split()),
                      "completion_tokens": len(content.split()),
                      "total_tokens": len(prompt.split()) + len(content.split())},
        }
        self.send(handler, 200, json.dumps(answer).encode())
