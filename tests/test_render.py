"""Exact wire payloads of each renderer for one rich window, and the edge cases of each shape."""

from __future__ import annotations

from typing import Any

from contextfold.events import (
    Compaction,
    FilePart,
    ImagePart,
    Item,
    Message,
    Reasoning,
    TextPart,
    ToolCall,
    ToolResult,
    assistant,
    system,
    user,
)
from contextfold.view._fold import Window, summary_message
from contextfold.view._render import (
    USER_PLACEHOLDER,
    arguments_object,
    render_anthropic,
    render_gemini,
    render_openai_chat,
    render_openai_responses,
)

IMAGE = "https://example.com/cat.png"
COMPACTION = Compaction(seq=1, strategy="summary", trigger="auto", kept=[], summary="The user plans a trip.")
SUMMARY = "".join(p.text for p in summary_message(COMPACTION).content if isinstance(p, TextPart))


def call(seq: int, call_id: str, name: str, arguments: str = "{}", batch: str = "b1") -> ToolCall:
    return ToolCall(seq=seq, call_id=call_id, name=name, arguments=arguments, batch_id=batch, turn_id="t1")


def window(*items: Item, system_prompt: str | None = "Be brief.") -> Window:
    return Window(system_prompt=system_prompt, tools=None, max_output_tokens=None, items=list(items))


def rich_window() -> Window:
    """Summary, user text + image, reasoning of two providers, text + 3 parallel calls, results out of order,
    a system message mid-conversation, a final answer and a new user message."""
    return window(
        summary_message(COMPACTION),
        Message(seq=2, role="user", content=[TextPart("What is this?"), ImagePart(IMAGE)], turn_id="t1"),
        Reasoning(seq=3, provider="openai", data={"id": "rs_1", "encrypted_content": "ENC"}, turn_id="t1"),
        Reasoning(seq=4, provider="anthropic", text="Let me think.", data={"signature": "SIG"}, turn_id="t1"),
        assistant("Checking three things.", seq=5, turn_id="t1"),
        call(6, "c1", "weather", '{"city": "Paris"}'),
        call(7, "c2", "time", '{"tz": "CET"}'),
        call(8, "c3", "lookup", '{"q": "cat"}'),
        ToolResult(seq=9, call_id="c2", output="12:00", turn_id="t1"),
        ToolResult(seq=10, call_id="c1", output="sunny", turn_id="t1"),
        ToolResult(seq=11, call_id="c3", output="not found", is_error=True, turn_id="t1"),
        system("Answer in French.", seq=12),
        assistant("Il fait beau.", seq=13, turn_id="t1"),
        user("Merci!", seq=14, turn_id="t2"),
    )


def test_openai_chat_exact() -> None:
    assert render_openai_chat(rich_window()) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": SUMMARY},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": IMAGE, "detail": "auto"}},
            ],
        },
        {
            "role": "assistant",
            "content": "Checking three things.",
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
                },
                {"id": "c2", "type": "function", "function": {"name": "time", "arguments": '{"tz": "CET"}'}},
                {"id": "c3", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "cat"}'}},
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "c2", "content": "12:00"},
        {"role": "tool", "tool_call_id": "c3", "content": "not found"},
        {"role": "system", "content": "Answer in French."},
        {"role": "assistant", "content": "Il fait beau."},
        {"role": "user", "content": "Merci!"},
    ]


def test_openai_responses_exact() -> None:
    instructions, items = render_openai_responses(rich_window())
    assert instructions == "Be brief."
    assert items == [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": SUMMARY}]},
        {
            "type": "message",
            "role": "user",
            "content": [
                {"type": "input_text", "text": "What is this?"},
                {"type": "input_image", "image_url": IMAGE, "detail": "auto"},
            ],
        },
        {"type": "reasoning", "id": "rs_1", "encrypted_content": "ENC", "summary": []},
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Checking three things."}],
        },
        {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": '{"city": "Paris"}'},
        {"type": "function_call", "call_id": "c2", "name": "time", "arguments": '{"tz": "CET"}'},
        {"type": "function_call", "call_id": "c3", "name": "lookup", "arguments": '{"q": "cat"}'},
        {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
        {"type": "function_call_output", "call_id": "c2", "output": "12:00"},
        {"type": "function_call_output", "call_id": "c3", "output": "not found"},
        {
            "type": "message",
            "role": "system",
            "content": [{"type": "input_text", "text": "Answer in French."}],
        },
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Il fait beau."}],
        },
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Merci!"}]},
    ]


def test_anthropic_exact() -> None:
    system_text, messages = render_anthropic(rich_window())
    assert system_text == "Be brief.\n\nAnswer in French."
    assert messages == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": SUMMARY},
                {"type": "text", "text": "What is this?"},
                {"type": "image", "source": {"type": "url", "url": IMAGE}},
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "Let me think.", "signature": "SIG"},
                {"type": "text", "text": "Checking three things."},
                {"type": "tool_use", "id": "c1", "name": "weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "c2", "name": "time", "input": {"tz": "CET"}},
                {"type": "tool_use", "id": "c3", "name": "lookup", "input": {"q": "cat"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "c1", "content": "sunny"},
                {"type": "tool_result", "tool_use_id": "c2", "content": "12:00"},
                {"type": "tool_result", "tool_use_id": "c3", "content": "not found", "is_error": True},
            ],
        },
        {"role": "assistant", "content": [{"type": "text", "text": "Il fait beau."}]},
        {"role": "user", "content": [{"type": "text", "text": "Merci!"}]},
    ]


def test_gemini_exact() -> None:
    instruction, contents = render_gemini(rich_window())
    assert instruction == {"parts": [{"text": "Be brief."}, {"text": "Answer in French."}]}
    assert contents == [
        {
            "role": "user",
            "parts": [
                {"text": SUMMARY},
                {"text": "What is this?"},
                {"fileData": {"mimeType": "image/png", "fileUri": IMAGE}},
            ],
        },
        {
            "role": "model",
            "parts": [
                {"text": "Checking three things."},
                {"functionCall": {"name": "weather", "args": {"city": "Paris"}}},
                {"functionCall": {"name": "time", "args": {"tz": "CET"}}},
                {"functionCall": {"name": "lookup", "args": {"q": "cat"}}},
            ],
        },
        {
            "role": "user",
            "parts": [
                {"functionResponse": {"name": "weather", "response": {"output": "sunny"}}},
                {"functionResponse": {"name": "time", "response": {"output": "12:00"}}},
                {"functionResponse": {"name": "lookup", "response": {"error": "not found"}}},
            ],
        },
        {"role": "model", "parts": [{"text": "Il fait beau."}]},
        {"role": "user", "parts": [{"text": "Merci!"}]},
    ]


def test_no_system_prompt_renders_none() -> None:
    w = window(user("hi", seq=1), system_prompt=None)
    assert render_openai_chat(w) == [{"role": "user", "content": "hi"}]
    assert render_openai_responses(w)[0] is None
    assert render_anthropic(w)[0] is None
    assert render_gemini(w)[0] is None


def test_developer_message_keeps_its_role_on_openai() -> None:
    w = window(user("hi", seq=1), Message(seq=2, role="developer", content=[TextPart("be terse")]))
    assert render_openai_chat(w)[-1] == {"role": "developer", "content": "be terse"}
    assert render_openai_responses(w)[1][-1]["role"] == "developer"
    assert render_anthropic(w)[0] == "Be brief.\n\nbe terse"


def test_window_opening_with_assistant_gets_a_user_placeholder() -> None:
    w = window(assistant("where were we?", seq=5), user("go on", seq=6))
    assert render_anthropic(w)[1][0] == {
        "role": "user",
        "content": [{"type": "text", "text": USER_PLACEHOLDER}],
    }
    assert render_gemini(w)[1][0] == {"role": "user", "parts": [{"text": USER_PLACEHOLDER}]}
    assert render_openai_chat(w)[1] == {"role": "assistant", "content": "where were we?"}  # OpenAI allows it


def test_calls_merge_only_with_text_of_the_same_turn() -> None:
    w = window(
        user("hi", seq=1),
        assistant("earlier turn", seq=2, turn_id="t0"),
        call(3, "c1", "f"),
        ToolResult(seq=4, call_id="c1", output="ok"),
    )
    messages = render_openai_chat(w)
    assert messages[2] == {"role": "assistant", "content": "earlier turn"}
    assert messages[3]["content"] is None
    assert messages[3]["tool_calls"][0]["id"] == "c1"


def test_reasoning_goes_only_to_its_provider() -> None:
    w = window(
        user("hi", seq=1),
        Reasoning(seq=2, provider="anthropic", data={"type": "redacted_thinking", "data": "XYZ"}),
        Reasoning(seq=3, provider="anthropic", text="no signature"),
        Reasoning(seq=4, provider="openai", text="summary text", data={"id": "rs_9"}),
        assistant("hello", seq=5),
    )
    assert render_anthropic(w)[1][1]["content"] == [
        {"type": "redacted_thinking", "data": "XYZ"},
        {"type": "text", "text": "hello"},
    ]
    items = render_openai_responses(w)[1]
    assert items[1] == {
        "type": "reasoning",
        "id": "rs_9",
        "summary": [{"type": "summary_text", "text": "summary text"}],
    }
    assert all("reasoning" not in str(m) for m in render_openai_chat(w))
    assert len(render_gemini(w)[1]) == 2


def test_empty_and_masked_items_render_what_they_hold() -> None:
    w = window(
        user("hi", seq=1),
        Message(seq=2, role="user", content=[TextPart("")], redacted=True),
        call(3, "c1", "f", arguments=""),
        ToolResult(seq=4, call_id="c1", output="[output folded away]", redacted=True),
        call(5, "c2", "g", arguments="not json", batch="b2"),
        ToolResult(seq=6, call_id="c2", output=""),
    )
    assert [m["role"] for m in render_openai_chat(w)] == [
        "system",
        "user",
        "assistant",
        "tool",
        "assistant",
        "tool",
    ]
    messages = render_anthropic(w)[1]
    assert messages[1]["content"][0]["input"] == {}
    assert messages[2]["content"][0]["content"] == "[output folded away]"
    assert messages[3]["content"][0]["input"] == {"arguments": "not json"}


def files_window() -> Window:
    return window(
        Message(
            seq=1,
            role="user",
            content=[
                ImagePart("data:image/png;base64,AAAA", detail="low"),
                FilePart(media_type="application/pdf", data="JVBE", filename="a.pdf"),
                FilePart(media_type="application/pdf", file_id="file-1"),
                FilePart(media_type="image/jpeg", data="BBBB"),
                FilePart(media_type="text/plain", data="aGVsbG8="),
            ],
        )
    )


def content_of(payload: list[dict[str, Any]], key: str = "content") -> list[Any]:
    result: list[Any] = payload[-1][key]
    return result


def test_file_and_image_parts_openai_chat() -> None:
    assert content_of(render_openai_chat(files_window())) == [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}},
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBE", "filename": "a.pdf"}},
        {"type": "file", "file": {"file_id": "file-1"}},
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,BBBB"}},
        {"type": "file", "file": {"file_data": "data:text/plain;base64,aGVsbG8="}},
    ]


def test_file_and_image_parts_openai_responses() -> None:
    assert content_of(render_openai_responses(files_window())[1]) == [
        {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "low"},
        {"type": "input_file", "file_data": "data:application/pdf;base64,JVBE", "filename": "a.pdf"},
        {"type": "input_file", "file_id": "file-1"},
        {"type": "input_image", "image_url": "data:image/jpeg;base64,BBBB", "detail": "auto"},
        {"type": "input_file", "file_data": "data:text/plain;base64,aGVsbG8="},
    ]


def test_file_and_image_parts_anthropic() -> None:
    assert content_of(render_anthropic(files_window())[1]) == [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"}},
        {"type": "document", "source": {"type": "file", "file_id": "file-1"}},
        {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "BBBB"}},
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "hello"}},
    ]


def test_file_and_image_parts_gemini() -> None:
    assert content_of(render_gemini(files_window())[1], "parts") == [
        {"inlineData": {"mimeType": "image/png", "data": "AAAA"}},
        {"inlineData": {"mimeType": "application/pdf", "data": "JVBE"}},
        {"fileData": {"mimeType": "application/pdf", "fileUri": "file-1"}},
        {"inlineData": {"mimeType": "image/jpeg", "data": "BBBB"}},
        {"inlineData": {"mimeType": "text/plain", "data": "aGVsbG8="}},
    ]


def test_assistant_images_are_dropped_where_the_api_takes_none() -> None:
    w = window(user("hi", seq=1), Message(seq=2, role="assistant", content=[ImagePart(IMAGE)]))
    assert render_openai_chat(w)[-1] == {"role": "user", "content": "hi"}
    assert len(render_openai_responses(w)[1]) == 1
    assert len(render_anthropic(w)[1]) == 1
    assert len(render_gemini(w)[1]) == 1


def test_arguments_nested_deeper_than_the_parser_goes_are_kept_as_text() -> None:
    deep = "[" * 5_000 + "]" * 5_000
    assert arguments_object(deep) == {"arguments": deep}
