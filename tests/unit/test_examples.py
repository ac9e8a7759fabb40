"""Ready-to-paste examples: the curl command really runs, the Python is valid, Chatbox has its fields."""

from __future__ import annotations

import ast
import json
import shlex

from llmnest.endpoints import Endpoint
from llmnest.examples import chatbox_settings, curl_example, python_example

EP = Endpoint("http://127.0.0.1:8080/v1", "sk-abc123456", "Qwen/QwQ-32B")


def test_curl_example_parses_to_the_right_request():
    words = shlex.split(curl_example(EP).replace("\\\n", " "))
    assert words[1] == "http://127.0.0.1:8080/v1/chat/completions"
    assert "Authorization: Bearer sk-abc123456" in words
    body = json.loads(words[words.index("-d") + 1])
    assert body["model"] == "Qwen/QwQ-32B" and body["messages"][0]["role"] == "user"
    assert "Authorization" not in curl_example(Endpoint(EP.base_url, None, EP.model))


def test_python_example_is_valid_python_with_the_endpoint():
    code = python_example(EP)
    ast.parse(code)
    assert "base_url='http://127.0.0.1:8080/v1'" in code and "api_key='sk-abc123456'" in code


def test_chatbox_settings_match_the_seed_table():
    s = chatbox_settings(EP)
    assert s["API host"] == "http://127.0.0.1:8080" and s["API path"] == "/v1/chat/completions"
    assert s["API key"] == "sk-abc123456" and s["Model"] == "Qwen/QwQ-32B"
