"""Bad input gets one clear error naming the culprit; keys change exactly when answers can."""

from __future__ import annotations

import json
import re

import pandas
import pytest
from pydantic import BaseModel

import kura_magic as km
from helpers import PROMPT, make_conversations

MESSAGES = [{"role": "user", "content": "hi"}]


def key(**overrides):
    return km.cache_key(**{"model": "openai/gpt-4o-mini", "messages": MESSAGES, **overrides})


def test_keys_ignore_transport_settings_and_secrets():
    plain = key(params={"temperature": 0})
    assert key(params={"temperature": 0, "api_key": "sk-secret", "timeout": 5}) == plain
    assert "sk-secret" not in plain


@pytest.mark.parametrize(
    "change",
    [
        {"model": "openai/gpt-4o"},
        {"messages": [{"role": "user", "content": "hi!"}]},
        {"messages": [{"role": "system", "content": "hi"}]},
        {"params": {"temperature": 0.5}},
        {"params": {"seed": 1}},
        {"params": {"top_p": 0.9}},
        {"params": {"stop": ["\n"]}},
        {"kind": "embedding"},
    ],
)
def test_keys_change_with_what_changes_the_answer(change):
    assert key(**change) != key()


def test_keys_hash_the_schema_not_its_name():
    class Same(BaseModel):
        a: str

    first = key(schema=Same)

    class Same(BaseModel):  # noqa: F811 - a redefinition, as in a notebook
        a: str
        b: int

    assert key(schema=Same) != first


def test_key_does_not_depend_on_dict_order():
    assert key(params={"a": 1, "b": 2}) == key(params={"b": 2, "a": 1})


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([], "holds no conversations"),
        ([{"chat_id": "x", "messages": []}], "row 0 .* 'messages': is empty"),
        ([{"chat_id": "x", "messages": [{"role": "user"}]}], r"row 0 .* 'messages\[0\].content'"),
        ([{"text": "ok"}, 42], "row 1 .* is a int"),
        ([{"chat_id": "x", "messages": [{"content": "hi"}]}], r"'messages\[0\].role'"),
        (7, "cannot read conversations from a int"),
    ],
)
def test_bad_data_names_the_row_and_field(rows, message):
    with pytest.raises(km.DataError, match=message):
        km.load_conversations(rows)


def test_loaders_accept_strings_dicts_frames_and_files(tmp_path):
    assert km.load_conversations(["one", "two"])[1].messages[0].content == "two"
    frame = pandas.DataFrame({"id": [10, 11], "text": ["a", "b"], "team": ["x", "y"]})
    loaded = km.load_conversations(frame)
    assert [c.chat_id for c in loaded] == ["10", "11"]
    assert loaded[0].metadata == {"team": "x"}

    rows = make_conversations(3)
    (tmp_path / "c.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (tmp_path / "c.json").write_text(json.dumps({"conversations": rows}))
    for name in ("c.jsonl", "c.json"):
        assert [c.chat_id for c in km.load_conversations(tmp_path / name)] == ["c0", "c1", "c2"]


def test_a_bad_file_names_the_file_and_line(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{oops\n')
    with pytest.raises(km.DataError, match="bad.jsonl line 2"):
        km.load_conversations(str(tmp_path / "bad.jsonl"))
    with pytest.raises(km.DataError, match="no file"):
        km.load_conversations(str(tmp_path / "missing.jsonl"))


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ("{{ transcript ", "does not parse"),
        ("Summarise the chat.", "never uses"),
        ("", "empty"),
        ("{{ transcript }} for {{ audience }}", "conversation 'c0': 'audience' is undefined"),
        ("Summarise:\n{{ transcript }", r"line 2 \({{ transcript }\): unexpected '}'"),
        ("\n\nSummarise:\n{{ transcript }", r"line 4 \({{ transcript }\)"),
        ("Summarise:\n{{ transcript | shout }}", r"line 2 .*No filter named 'shout'"),
    ],
    ids=["unclosed", "no-conversation", "empty", "undefined", "line-2", "after-blank-lines", "unknown-filter"],
)
def test_bad_templates_name_the_problem_before_any_call(llm, prompt, message):
    with pytest.raises(km.errors.TemplateError, match=message):
        km.summarise(make_conversations(2), prompt)
    assert llm.request_count == 0


def test_template_sees_user_variables_and_the_conversation(llm):
    run = km.summarise(
        make_conversations(1), "For {{ audience }}: {{ conversation.chat_id }} {{ transcript }}",
        variables={"audience": "managers"},
    )
    sent = llm.chat_requests[0].messages[0]["content"]
    assert sent.startswith("For managers: c0 user: help me with order 0")
    assert run.stats.fresh == 1


def test_unknown_model_is_refused_before_any_call(llm):
    with pytest.raises(km.errors.UnknownModelError, match="'not-a-provider-model'"):
        km.summarise(make_conversations(2), PROMPT, model="not-a-provider-model")
    assert llm.request_count == 0


def test_missing_api_key_is_refused_before_anything_is_spent(llm, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(km.errors.MissingAPIKeyError, match="set OPENAI_API_KEY"):
        km.summarise(make_conversations(2), PROMPT)
    assert llm.request_count == 0


def test_unknown_schema_name_says_what_exists():
    with pytest.raises(km.errors.SchemaError, match="KuraSummary"):
        km.summarise(make_conversations(1), PROMPT, schema="NoSuchSchema")


def test_builtin_kura_schema_by_name(llm):
    run = km.summarise(make_conversations(2), PROMPT, schema="KuraSummary")
    assert all(1 <= r.summary.concerning_score <= 5 for r in run)
    assert "topic" in run.to_pandas().columns


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("KURA_MAGIC_MAX_CONCURRENCY", "zero", "KURA_MAGIC_MAX_CONCURRENCY"),
        ("KURA_MAGIC_MAX_CONCURRENCY", "0", "greater than or equal to 1"),
        ("KURA_MAGIC_EXPERIMENT", "x" * 300, "experiment name"),
    ],
)
def test_bad_settings_name_the_variable(monkeypatch, variable, value, message):
    monkeypatch.setenv(variable, value)
    with pytest.raises(km.ConfigError, match=message):
        km.summarise(make_conversations(1), PROMPT)


def test_configure_rejects_unknown_settings():
    with pytest.raises(km.ConfigError, match="unknown setting 'colour'"):
        km.configure(colour="blue")


def test_api_key_never_appears_in_settings_repr(monkeypatch):
    monkeypatch.setenv("KURA_MAGIC_API_KEY", "sk-very-secret-value")
    assert "sk-very-secret-value" not in repr(km.config.settings())


LONE_SURROGATE = "\ud83d"  # half of an emoji, as left by cutting a string in the middle
SURROGATE_HINT = r"lone surrogate \(\\ud83d\) at character \d+, half of a character: .* re-encode"


def test_a_lone_surrogate_in_a_message_names_the_row_and_field(llm):
    conversations = make_conversations(4)
    conversations[3]["messages"][1]["content"] = "Sure " + LONE_SURROGATE
    where = r"row 3 of the data, field 'messages\[1\].content'"
    with pytest.raises(km.DataError, match=rf"{where}: contains a {SURROGATE_HINT}"):
        km.summarise(conversations, PROMPT)
    assert llm.request_count == 0


def test_a_lone_surrogate_in_a_file_or_a_variable_is_refused(llm, tmp_path):
    path = tmp_path / "cut.jsonl"
    path.write_text('{"text": "ok"}\n{"text": "cut \\ud83d"}\n')  # json.dumps writes this escape
    where = rf"row 1 of {re.escape(str(path))}, field 'messages\[0\].content'"
    with pytest.raises(km.DataError, match=rf"{where}: contains a {SURROGATE_HINT}"):
        km.load_conversations(path)
    with pytest.raises(km.errors.TemplateError, match=rf"conversation 'c0' contains a {SURROGATE_HINT}"):
        km.summarise(
            make_conversations(1), "{{ transcript }} {{ tag }}", variables={"tag": LONE_SURROGATE}
        )
    assert llm.request_count == 0


@pytest.mark.parametrize(
    ("messages", "message"),
    [
        ("text " + LONE_SURROGATE, f"message 0, field 'content': contains a {SURROGATE_HINT}"),
        ([{"role": "user", "content": "hi"}, {"role": LONE_SURROGATE, "content": "x"}],
         f"message 1, field 'role': contains a {SURROGATE_HINT}"),
        (None, "cannot send a NoneType: give a text or a list"),
        ({"role": "user", "content": "hi"}, "cannot send a dict"),
        (["hi"], "message 0 is a str: give a {'role', 'content'} dict"),
    ],
)
def test_complete_refuses_what_cannot_be_sent(llm, messages, message):
    with pytest.raises(km.DataError, match=message):
        km.complete(messages)
    assert llm.request_count == 0


@pytest.mark.parametrize(
    ("name", "content"),
    [("latin1.jsonl", '{"text": "ok"}\n{"text": "café"}\n'),
     ("latin1.json", '[{"text": "ok"},\n {"text": "café"}]')],
)
def test_a_file_that_is_not_utf8_names_the_line(llm, tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content.encode("latin-1"))
    hint = r"line 2 is not UTF-8 \(byte 0xe9\): save the file as UTF-8"
    with pytest.raises(km.DataError, match=rf"{name} {hint}"):
        km.summarise(path, PROMPT)
    assert llm.request_count == 0


def test_an_export_that_is_not_utf8_names_the_line(tmp_path):
    exported = tmp_path / "default.jsonl"
    exported.write_bytes(b'{"key": "k", "entry": {"model": "m", "response": "caf\xe9"}}\n')
    with pytest.raises(km.DataError, match=r"default.jsonl line 1 is not UTF-8 \(byte 0xe9\)"):
        km.import_experiment(exported, "x")
    assert km.cache_info().for_experiment("x").entries == 0


@pytest.mark.parametrize("prompt", [None, ["{{ transcript }}"]])
def test_a_prompt_that_is_not_a_string_is_a_template_error(llm, prompt):
    kind = type(prompt).__name__
    for run in (km.summarise, km.estimate):
        with pytest.raises(km.errors.TemplateError, match=f"the prompt is a {kind}, not a string"):
            run(make_conversations(2), prompt)
    assert llm.request_count == 0
