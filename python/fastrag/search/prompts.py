"""Prompts of Meta Knowledge Summary augmentation (Japanese and English) and their parsers.

Three prompts, each in the collection's language ("ja" or "en"):

* `metadata_messages`: one document -> a JSON object with a topic, tags and question-answer
  pairs (`parse_metadata` reads it out of chatter, code fences and trailing commas);
* `summary_messages`: a cluster of documents (their tags and synthetic questions) -> a Meta
  Knowledge Summary, plain text;
* `rewrite_messages`: a question and the summary of its cluster -> at most five simple
  questions as a numbered list and nothing else (`parse_questions` reads them out of
  markdown, chatter or an answer without a list).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

__all__ = ["LANGUAGES", "MAX_QUESTIONS", "DocMeta", "metadata_messages", "parse_metadata",
           "parse_questions", "rewrite_messages", "summary_messages"]

#: the languages with prompts
LANGUAGES = ("en", "ja")
#: the most sub-questions a rewrite asks for (and keeps)
MAX_QUESTIONS = 5
#: the most characters of a document sent to the LLM
MAX_DOC_CHARS = 6000

_REWRITE = {
    "ja": (
        "あなたは検索を手伝うアシスタントです。以下の知識の要約を参考にして、ユーザーの質問を"
        "検索に使える簡単な質問に書き換えてください。質問は最大5つまでとし、番号付きのリスト"
        "（1. 2. ...）で出力してください。質問以外には何も書かないでください。\n\n"
        "知識の要約:\n{summary}\n\nユーザーの質問:\n{query}"
    ),
    "en": (
        "You help a search engine. Using the knowledge summary below, rewrite the user's "
        "question into at most five simple questions that can each be searched on their own. "
        "Answer with a numbered list (1. 2. ...) of the questions and nothing else.\n\n"
        "Knowledge summary:\n{summary}\n\nUser question:\n{query}"
    ),
}

_METADATA = {
    "ja": (
        "次の文書を読み、JSON だけを出力してください。形式: {{\"topic\": \"文書の主題（短く）\", "
        "\"tags\": [\"キーワード\", ...（3〜6個）], \"qa\": [{{\"q\": \"この文書が答える質問\", "
        "\"a\": \"その答え\"}}, ...（{n}個まで）]}}\n\n文書:\n{text}"
    ),
    "en": (
        "Read the document below and answer with JSON only, in this shape: {{\"topic\": "
        "\"the document's subject, short\", \"tags\": [\"keyword\", ... (3 to 6)], \"qa\": "
        "[{{\"q\": \"a question this document answers\", \"a\": \"its answer\"}}, ... (up to "
        "{n})]}}\n\nDocument:\n{text}"
    ),
}

_SUMMARY = {
    "ja": (
        "以下は、ある文書群のキーワードと、その文書群が答える質問の例です。この文書群にどのような"
        "知識が含まれているかを、検索の質問を書き換える人のために、簡潔に要約してください"
        "（5文以内）。\n\nキーワード: {tags}\n\n質問の例:\n{questions}"
    ),
    "en": (
        "Below are the keywords of a group of documents and examples of questions they answer. "
        "Summarise, in at most five sentences, what knowledge this group holds, for someone "
        "who rewrites search questions.\n\nKeywords: {tags}\n\nExample questions:\n{questions}"
    ),
}


@dataclass
class DocMeta:
    """What the LLM wrote about one document."""

    topic: str = ""
    tags: list[str] = field(default_factory=list)
    qa: list[tuple[str, str]] = field(default_factory=list)


def _language(language: str) -> str:
    if language not in LANGUAGES:
        raise ValueError(f"language must be one of {', '.join(LANGUAGES)}, got {language!r}")
    return language


def _user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def rewrite_messages(query: str, summary: str, language: str) -> list[dict[str, str]]:
    """The chat messages asking to split `query` into at most five simple questions."""
    none = "（なし）" if language == "ja" else "(none)"
    return _user(_REWRITE[_language(language)].format(summary=summary.strip() or none,
                                                      query=query.strip()))


def metadata_messages(text: str, language: str, n_questions: int = 3) -> list[dict[str, str]]:
    """The chat messages asking for a document's topic, tags and `n_questions` QA pairs."""
    return _user(_METADATA[_language(language)].format(n=n_questions,
                                                       text=text[:MAX_DOC_CHARS]))


def summary_messages(tags: list[str], questions: list[str],
                     language: str) -> list[dict[str, str]]:
    """The chat messages asking for the Meta Knowledge Summary of one cluster."""
    sep = "、" if language == "ja" else ", "
    listed = "\n".join(f"- {q}" for q in questions)
    return _user(_SUMMARY[_language(language)].format(tags=sep.join(tags), questions=listed))


# -- parsing -------------------------------------------------------------------------------

# a list item: "1.", "1)", "(1)", "１．", "Q1:", "質問1：", "- ", "* ", "• ", "・"
_ITEM = re.compile(
    r"^\s*(?:(?:[-*+•・]\s+)|(?:(?:Q|q|質問)?\s*[\(（]?[0-9０-９]{1,2}\s*[\.．\):：、）]\s*))(.*)$")
_NUMBERED = re.compile(r"^\s*(?:Q|q|質問)?\s*[\(（]?[0-9０-９]{1,2}\s*[\.．\):：、）]")
_MARKUP = re.compile(r"(\*\*|__|`+|^#+\s*|^>\s*)")
_QUESTION_END = ("?", "？")


def _clean(line: str) -> str:
    text = _MARKUP.sub("", line).strip()
    if len(text) >= 2 and text[0] in "\"'「『“" and text[-1] in "\"'」』”":
        text = text[1:-1].strip()
    return text


def parse_questions(text: str, max_questions: int = MAX_QUESTIONS) -> list[str]:
    """The questions of an LLM's answer, at most `max_questions`, without repeats.

    Reads a numbered or bulleted list (markdown emphasis, quotes and full-width digits
    allowed) and ignores the chatter around it ("Here are the questions:"); without a list,
    the lines that end with a question mark; an answer that has neither gives [].
    """
    if not isinstance(text, str):
        return []
    lines = [line for line in text.replace("\r", "\n").split("\n") if line.strip()]
    lines = [line for line in lines if not line.strip().startswith("```")]
    numbered = [m.group(1) for line in lines
                if _NUMBERED.match(_MARKUP.sub("", line)) and (m := _ITEM.match(
                    _MARKUP.sub("", line)))]
    items = numbered or [m.group(1) for line in lines if (m := _ITEM.match(line))]
    if not items:
        items = [line for line in lines if _clean(line).endswith(_QUESTION_END)]
    out: list[str] = []
    for item in items:
        q = _clean(item)
        if len(q) < 2 or q.endswith((":", "：")) or q in out:
            continue
        out.append(q)
        if len(out) == max_questions:
            break
    return out


_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


def _json_object(text: str) -> dict[str, Any] | None:
    """The first JSON object in `text` (inside a code fence or among chatter), or None."""
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    for candidate in candidates:
        start = candidate.find("{")
        while start >= 0:
            end = candidate.rfind("}")
            while end > start:
                chunk = candidate[start:end + 1]
                for attempt in (chunk, re.sub(r",\s*([}\]])", r"\1", chunk)):
                    try:
                        value = json.loads(attempt)
                    except ValueError:
                        continue
                    if isinstance(value, dict):
                        return value
                end = candidate.rfind("}", start, end)
            start = candidate.find("{", start + 1)
    return None


def _strings(value: Any, limit: int) -> list[str]:
    if isinstance(value, str):
        value = re.split(r"[,、]", value)
    if not isinstance(value, list):
        return []
    out: list[str] = []
    for v in value:
        if isinstance(v, (str, int, float)) and not isinstance(v, bool):
            s = str(v).strip()
            if s and s not in out:
                out.append(s)
    return out[:limit]


def parse_metadata(text: str, max_questions: int = 10) -> DocMeta | None:
    """A document's topic, tags and QA pairs from the LLM's answer, or None when the answer
    holds no JSON object with at least a topic, a tag or a question.

    Tolerates code fences, chatter around the object and trailing commas; ``qa`` may be a
    list of ``{"q", "a"}`` objects (or ``question`` / ``answer``), of [q, a] pairs or of
    plain questions.
    """
    data = _json_object(text) if isinstance(text, str) else None
    if data is None:
        return None
    topic = data.get("topic")
    meta = DocMeta(topic=topic.strip() if isinstance(topic, str) else "",
                   tags=_strings(data.get("tags"), 12))
    raw = data.get("qa", data.get("questions"))
    for item in raw if isinstance(raw, list) else []:
        q: Any = None
        a: Any = ""
        if isinstance(item, dict):
            q = item.get("q", item.get("question"))
            a = item.get("a", item.get("answer", ""))
        elif isinstance(item, (list, tuple)) and item:
            q, a = item[0], item[1] if len(item) > 1 else ""
        elif isinstance(item, str):
            q = item
        if isinstance(q, str) and q.strip() and all(q.strip() != x for x, _ in meta.qa):
            meta.qa.append((q.strip(), a.strip() if isinstance(a, str) else ""))
    meta.qa = meta.qa[:max_questions]
    if not (meta.topic or meta.tags or meta.qa):
        return None
    return meta
