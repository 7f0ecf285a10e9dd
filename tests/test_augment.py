"""The chat client (against a scripted OpenAI-compatible server on 127.0.0.1) and the
parsers of the Meta Knowledge Summary prompts."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from fastrag.search.llm import ChatClient, LLMError
from fastrag.search.prompts import (
    metadata_messages,
    parse_metadata,
    parse_questions,
    rewrite_messages,
    summary_messages,
)
from http_fake import fixture
from llm_fake import ChatFake

server = fixture(ChatFake)
HI = [{"role": "user", "content": "User question:\nwhat is lift"}]


def client(fake: ChatFake, **options: object) -> ChatClient:
    return ChatClient("tiny", base_url=fake.url, backoff=0.0, **options)  # type: ignore[arg-type]


def test_chat_sends_the_openai_shape_and_counts_usage(server: ChatFake) -> None:
    llm = client(server, api_key="sk-test", max_tokens=64)
    assert llm.chat(HI) == "1. what is lift"
    request = server.requests[0]
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["Authorization"] == "Bearer sk-test"
    assert request["body"] == {"model": "tiny", "messages": HI, "temperature": 0.0,
                               "max_tokens": 64}
    usage = llm.usage
    assert (usage.requests, usage.cached, usage.prompt_tokens, usage.completion_tokens) == (
        1, 0, 5, 4)
    assert usage.total_tokens == 9


def test_answers_are_cached_on_disk_by_prompt_hash(server: ChatFake, tmp_path: Path) -> None:
    llm = client(server, cache_dir=tmp_path / "cache")
    first = llm.chat(HI)
    again = client(server, cache_dir=tmp_path / "cache")  # a new process, the same folder
    assert again.chat(HI) == first
    assert len(server.requests) == 1 and again.usage.cached == 1
    # another model or other parameters are another key
    other = ChatClient("other", base_url=server.url, cache_dir=tmp_path / "cache")
    other.chat(HI)
    ChatClient("tiny", base_url=server.url, cache_dir=tmp_path / "cache",
               temperature=0.5).chat(HI)
    assert len(server.requests) == 3
    files = list((tmp_path / "cache").rglob("*.json"))
    assert len(files) == 3 and not list((tmp_path / "cache").rglob(".tmp-*"))
    # a torn cache file is asked again, not trusted
    path = (tmp_path / "cache") / llm.cache_key(HI)[:2] / f"{llm.cache_key(HI)}.json"
    path.write_text('{"content": ', encoding="utf-8")
    assert client(server, cache_dir=tmp_path / "cache").chat(HI) == first
    assert len(server.requests) == 4
    llm.forget(HI)
    assert not path.exists()


def test_chat_many_keeps_order_and_bounds_concurrency(server: ChatFake) -> None:
    server.delays = [0.05] * 8
    llm = client(server, concurrency=3)
    asks = [[{"role": "user", "content": f"User question:\nq{i}"}] for i in range(8)]
    assert llm.chat_many(asks) == [f"1. q{i}" for i in range(8)]
    assert 1 < server.max_inflight <= 3


def test_transient_errors_are_retried(server: ChatFake) -> None:
    server.script = [("status", 503, b'{"error": {"message": "busy"}}', {"Retry-After": "0"})]
    llm = client(server, max_retries=2)
    assert llm.chat(HI) == "1. what is lift"
    assert len(server.requests) == 2


@pytest.mark.parametrize("action, message", [
    (("non_json",), "not JSON"),
    (("raw", {"choices": []}), "choices[0].message.content"),
    (("raw", {"choices": [{"message": {"content": None}}]}), "choices[0].message.content"),
    (("status", 401, b'{"error": {"message": "bad key"}}', {}), "bad key"),
])
def test_bad_answers_raise_llm_error(server: ChatFake, action: tuple[object, ...],
                                     message: str) -> None:
    server.script = [action]
    with pytest.raises(LLMError, match=message.replace("[", r"\[").replace("]", r"\]")):
        client(server).chat(HI)


def test_timeout_and_refused_connection_raise_llm_error(server: ChatFake) -> None:
    server.script = [("sleep", 1.0)]
    with pytest.raises(LLMError, match="failed after 1 attempt"):
        client(server, timeout=0.2, max_retries=0).chat(HI)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(LLMError, match="connection refused"):
        ChatClient("tiny", base_url=f"http://127.0.0.1:{port}/v1").chat(HI)


def test_options_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(ValueError, match="OPENAI_BASE_URL"):
        ChatClient("m")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1/")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    llm = ChatClient("m")
    assert llm.url == "http://127.0.0.1:9/v1/chat/completions"
    assert llm._headers()["Authorization"] == "Bearer sk-env"
    for bad in [{"temperature": 3}, {"max_tokens": 0}, {"timeout": 0}, {"concurrency": 0}]:
        with pytest.raises(ValueError):
            ChatClient("m", **bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="model"):
        ChatClient(" ")
    with pytest.raises(ValueError, match="http"):
        ChatClient("m", base_url="localhost:11434")
    with pytest.raises(TypeError, match="messages"):
        llm.chat("hello")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"messages\[0\]"):
        llm.chat([{"role": "user"}])


# -- prompts and parsers ---------------------------------------------------------------------

def test_prompts_in_both_languages() -> None:
    ja = rewrite_messages("揚力とは", "航空の文書", "ja")[0]["content"]
    assert "最大5つ" in ja and "番号付き" in ja and "質問以外には何も書かない" in ja
    assert "揚力とは" in ja and "航空の文書" in ja
    en = rewrite_messages("what is lift", "", "en")[0]["content"]
    assert "at most five" in en and "nothing else" in en and "(none)" in en
    assert "up to 4" in metadata_messages("doc text", "en", 4)[0]["content"]
    assert "4個まで" in metadata_messages("文書", "ja", 4)[0]["content"]
    assert "a, b" in summary_messages(["a", "b"], ["q?"], "en")[0]["content"]
    with pytest.raises(ValueError, match="language"):
        rewrite_messages("q", "", "fr")


@pytest.mark.parametrize("answer, expected", [
    ("1. What is lift?\n2. What is drag?", ["What is lift?", "What is drag?"]),
    ("Sure! Here are the questions:\n\n1) What is lift?\n2) **How** does drag scale?\n\n"
     "I hope this helps.", ["What is lift?", "How does drag scale?"]),
    ("**1. What is lift?**\n**2. Why?**", ["What is lift?", "Why?"]),
    ("１．揚力とは何か？\n２．抗力とは何か？\n以上です。", ["揚力とは何か？", "抗力とは何か？"]),
    ("- what is x?\n- what is y?", ["what is x?", "what is y?"]),
    ("Q1: what is x?\nQ2: what is x?\nQ3: what is z?", ["what is x?", "what is z?"]),
    ("```\n1. a question?\n```", ["a question?"]),
    ("What is lift?\nAlso: what is drag?", ["What is lift?", "Also: what is drag?"]),
    ("1. a\n2. bb\n3. cc\n4. dd\n5. ee\n6. ff\n7. gg", ["bb", "cc", "dd", "ee", "ff"]),
    ("Sorry, I cannot help with that.", []),
    ("", []),
])
def test_parse_questions(answer: str, expected: list[str]) -> None:
    assert parse_questions(answer) == expected


def test_parse_metadata_reads_json_among_chatter() -> None:
    text = ('Here you go:\n```json\n{"topic": "lift", "tags": ["wing", "lift",], '
            '"qa": [{"q": "what is lift?", "a": "a force"}, ["why stall?", "separation"], '
            '"plain question?", {"q": "what is lift?"}]}\n```\nAnything else?')
    meta = parse_metadata(text)
    assert meta is not None
    assert meta.topic == "lift" and meta.tags == ["wing", "lift"]
    assert meta.qa == [("what is lift?", "a force"), ("why stall?", "separation"),
                       ("plain question?", "")]
    assert parse_metadata('{"tags": "a, b、c"}').tags == ["a", "b", "c"]  # type: ignore[union-attr]
    assert parse_metadata(json.dumps({"qa": [{"q": "x?"}] * 3}), 1).qa == [("x?", "")]  # type: ignore[union-attr]
    for garbage in ["no json here", "{}", '{"topic": 3}', "[1, 2]", '{"topic": "x"']:
        assert parse_metadata(garbage) is None, garbage
