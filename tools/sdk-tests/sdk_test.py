#!/usr/bin/env python3
"""Drive a running ds4-server with the official openai and anthropic SDKs.

Usage: sdk_test.py BASE_URL [--noise] [--auth-url URL --api-key KEY]

BASE_URL is the server root (e.g. http://127.0.0.1:8000).

Default mode: the server must run the deterministic echo test double
(crates/ds4-engine `testing`), which generates exactly the text after "ECHO:"
in the last user turn: that is how these checks know what the model "says"
(reasoning, text, DSML tool calls), so they assert contents.

--noise: the server runs a model whose output is unknown (the embedded demo
model): every endpoint is driven streaming and non-streaming, with tools
declared and thinking on and off, and only the shapes of the parsed SDK
objects are asserted.

Exit status 0 when every check passes; failures are listed on stderr.
"""

import json
import sys
import traceback

import anthropic
import openai

PINNED = {"openai": "3.51.", "anthropic": "2.10."}

DSML_CALL = (
    "\n\n<｜DSML｜tool_calls>\n"
    '<｜DSML｜invoke name="get_weather">\n'
    '<｜DSML｜parameter name="city" string="true">Paris</｜DSML｜parameter>\n'
    '<｜DSML｜parameter name="days" string="false">3</｜DSML｜parameter>\n'
    "</｜DSML｜invoke>\n"
    "</｜DSML｜tool_calls>"
)
CALL_SCRIPT = "Checking." + DSML_CALL
WEATHER_ARGS = {"city": "Paris", "days": 3}

OPENAI_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                "required": ["city"],
            },
        },
    }
]
RESPONSES_TOOLS = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "Get the weather",
        "parameters": OPENAI_TOOLS[0]["function"]["parameters"],
    }
]
ANTHROPIC_TOOLS = [
    {
        "name": "get_weather",
        "description": "Get the weather",
        "input_schema": OPENAI_TOOLS[0]["function"]["parameters"],
    }
]

CHECKS = []


def check(fn):
    CHECKS.append(fn)
    return fn


def eq(got, want, what):
    if got != want:
        raise AssertionError(f"{what}: got {got!r}, want {want!r}")


def truthy(v, what):
    if not v:
        raise AssertionError(f"{what}: got {v!r}")


def extra(obj, name):
    """A field the SDK model does not declare (e.g. reasoning_content)."""
    v = getattr(obj, name, None)
    if v is None and getattr(obj, "model_extra", None):
        v = obj.model_extra.get(name)
    return v


# ---------------------------------------------------------------- OpenAI


@check
def openai_models(oa, an):
    ids = [m.id for m in oa.models.list()]
    truthy("deepseek-v4-flash" in ids, f"models list {ids}")
    m = oa.models.retrieve("deepseek-v4-flash")
    eq(m.id, "deepseek-v4-flash", "retrieve id")
    eq(m.object, "model", "retrieve object")


@check
def openai_chat_plain(oa, an):
    r = oa.chat.completions.create(
        model="deepseek-chat", messages=[{"role": "user", "content": "ECHO:Hello from the SDK."}]
    )
    eq(r.object, "chat.completion", "object")
    truthy(r.id.startswith("chatcmpl-"), "id")
    c = r.choices[0]
    eq(c.message.role, "assistant", "role")
    eq(c.message.content, "Hello from the SDK.", "content")
    eq(c.finish_reason, "stop", "finish_reason")
    eq(c.message.tool_calls, None, "tool_calls")
    eq(r.usage.completion_tokens, len("Hello from the SDK."), "completion tokens")
    eq(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens, "total")
    eq(r.usage.prompt_tokens_details.cached_tokens, 0, "cached tokens (cold)")


@check
def openai_chat_thinking(oa, an):
    r = oa.chat.completions.create(
        model="deepseek-v4-flash",
        messages=[{"role": "user", "content": "ECHO:Two plus two.</think>4"}],
        reasoning_effort="high",
    )
    m = r.choices[0].message
    eq(extra(m, "reasoning_content"), "Two plus two.", "reasoning_content")
    eq(m.content, "4", "content")


@check
def openai_chat_tools(oa, an):
    r = oa.chat.completions.create(
        model="deepseek-chat",
        messages=[{"role": "user", "content": "ECHO:" + CALL_SCRIPT}],
        tools=OPENAI_TOOLS,
    )
    c = r.choices[0]
    eq(c.finish_reason, "tool_calls", "finish_reason")
    eq(c.message.content, "Checking.", "content")
    eq(len(c.message.tool_calls), 1, "number of calls")
    tc = c.message.tool_calls[0]
    truthy(tc.id.startswith("call_"), "call id")
    eq(tc.type, "function", "type")
    eq(tc.function.name, "get_weather", "name")
    eq(json.loads(tc.function.arguments), WEATHER_ARGS, "arguments")
    # Send the result back: the history with the call renders and runs.
    r2 = oa.chat.completions.create(
        model="deepseek-chat",
        messages=[
            {"role": "user", "content": "ECHO:" + CALL_SCRIPT},
            c.message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": tc.id, "content": "ECHO:Sunny."},
        ],
        tools=OPENAI_TOOLS,
    )
    eq(r2.choices[0].message.content, "Sunny.", "answer after tool result")


@check
def openai_chat_stream(oa, an):
    stream = oa.chat.completions.create(
        model="deepseek-v4-flash",
        messages=[{"role": "user", "content": "ECHO:Hmm.</think>" + CALL_SCRIPT}],
        tools=OPENAI_TOOLS,
        stream=True,
        stream_options={"include_usage": True},
    )
    reasoning, content, args, names, finish, usage = "", "", {}, {}, None, None
    first = True
    for chunk in stream:
        eq(chunk.object, "chat.completion.chunk", "chunk object")
        if chunk.usage is not None:
            usage = chunk.usage
        if not chunk.choices:
            continue
        d = chunk.choices[0].delta
        if first:
            eq(d.role, "assistant", "first delta role")
            first = False
        reasoning += extra(d, "reasoning_content") or ""
        content += d.content or ""
        for tc in d.tool_calls or []:
            if tc.function and tc.function.name:
                names[tc.index] = tc.function.name
            args[tc.index] = args.get(tc.index, "") + ((tc.function and tc.function.arguments) or "")
        if chunk.choices[0].finish_reason:
            finish = chunk.choices[0].finish_reason
    eq(reasoning, "Hmm.", "streamed reasoning")
    eq(content, "Checking.", "streamed content")
    eq(names, {0: "get_weather"}, "streamed tool names")
    eq(json.loads(args[0]), WEATHER_ARGS, "streamed arguments")
    eq(finish, "tool_calls", "finish")
    truthy(usage is not None and usage.completion_tokens > 0, "usage chunk")


@check
def openai_chat_stream_helper(oa, an):
    with oa.chat.completions.stream(
        model="deepseek-chat",
        messages=[{"role": "user", "content": "ECHO:" + CALL_SCRIPT}],
        tools=OPENAI_TOOLS,
    ) as s:
        for _ in s:
            pass
        final = s.get_final_completion()
    m = final.choices[0].message
    eq(m.content, "Checking.", "helper content")
    eq(m.tool_calls[0].function.name, "get_weather", "helper tool name")
    eq(json.loads(m.tool_calls[0].function.arguments), WEATHER_ARGS, "helper arguments")
    eq(final.choices[0].finish_reason, "tool_calls", "helper finish")


@check
def openai_chat_cache_reuse(oa, an):
    msgs = [
        {"role": "system", "content": "Cache test."},
        {"role": "user", "content": "ECHO:Turn one."},
    ]
    r1 = oa.chat.completions.create(model="deepseek-chat", messages=msgs)
    msgs += [
        {"role": "assistant", "content": r1.choices[0].message.content},
        {"role": "user", "content": "ECHO:Turn two."},
    ]
    r2 = oa.chat.completions.create(model="deepseek-chat", messages=msgs)
    eq(r2.choices[0].message.content, "Turn two.", "second turn")
    eq(
        r2.usage.prompt_tokens_details.cached_tokens,
        r1.usage.prompt_tokens + r1.usage.completion_tokens,
        "cached tokens of the extended prompt",
    )


@check
def openai_completions(oa, an):
    r = oa.completions.create(model="deepseek-chat", prompt="ECHO:raw text", max_tokens=50)
    eq(r.object, "text_completion", "object")
    eq(r.choices[0].text, "raw text", "text")
    eq(r.choices[0].finish_reason, "stop", "finish")
    text = ""
    for ch in oa.completions.create(model="deepseek-chat", prompt="ECHO:streamed", max_tokens=50, stream=True):
        if ch.choices:
            text += ch.choices[0].text
    eq(text, "streamed", "streamed completion")


@check
def openai_responses(oa, an):
    r = oa.responses.create(
        model="deepseek-v4-flash",
        input="ECHO:Plan.</think>" + CALL_SCRIPT,
        tools=RESPONSES_TOOLS,
        reasoning={"effort": "high", "summary": "auto"},
    )
    eq(r.object, "response", "object")
    eq(r.status, "completed", "status")
    types = [o.type for o in r.output]
    eq(types, ["reasoning", "message", "function_call"], "output item types")
    eq(r.output[0].summary[0].text, "Plan.", "reasoning summary")
    eq(r.output_text, "Checking.", "output_text")
    fc = r.output[2]
    eq(fc.name, "get_weather", "function name")
    eq(json.loads(fc.arguments), WEATHER_ARGS, "function arguments")
    truthy(fc.call_id.startswith("call_"), "call_id")
    # The echo test tokenizer: one token per byte, one per special token ("Plan." + "</think>").
    eq(r.usage.output_tokens_details.reasoning_tokens, len(b"Plan.") + 1, "reasoning tokens")
    # Thinking off, plain text.
    r = oa.responses.create(model="deepseek-chat", input="ECHO:plain answer")
    eq(r.output_text, "plain answer", "plain output_text")


@check
def openai_responses_stream(oa, an):
    with oa.responses.stream(
        model="deepseek-v4-flash",
        input="ECHO:Plan.</think>" + CALL_SCRIPT,
        tools=RESPONSES_TOOLS,
        reasoning={"effort": "high", "summary": "auto"},
    ) as s:
        deltas = ""
        types = []
        for ev in s:
            types.append(ev.type)
            if ev.type == "response.output_text.delta":
                deltas += ev.delta
        final = s.get_final_response()
    eq(types[0], "response.created", "first event")
    eq(types[1], "response.in_progress", "second event")
    eq(types[-1], "response.completed", "last event")
    eq(deltas, "Checking.", "text deltas")
    eq(final.output_text, "Checking.", "final output_text")
    eq([o.type for o in final.output], ["reasoning", "message", "function_call"], "final items")
    eq(json.loads(final.output[2].arguments), WEATHER_ARGS, "final arguments")
    # Raw event iteration.
    seqs = [ev.sequence_number for ev in oa.responses.create(model="deepseek-chat", input="ECHO:hi", stream=True)]
    eq(seqs, list(range(len(seqs))), "sequence numbers")


@check
def openai_errors(oa, an):
    try:
        oa.chat.completions.create(model="gpt-nope", messages=[{"role": "user", "content": "x"}])
        raise AssertionError("unknown model accepted")
    except openai.NotFoundError as e:
        eq(e.status_code, 404, "status")
        eq(e.code, "model_not_found", "code")
    try:
        oa.chat.completions.create(model="deepseek-chat", messages=[])
        raise AssertionError("empty messages accepted")
    except openai.BadRequestError as e:
        eq(e.status_code, 400, "status")
    try:
        oa.chat.completions.create(model="deepseek-chat", messages=[{"role": "user", "content": "x"}], max_tokens=10**9)
        raise AssertionError("huge max_tokens accepted")
    except openai.BadRequestError as e:
        truthy("max_tokens" in str(e), "max_tokens message")


# ---------------------------------------------------------------- Anthropic


@check
def anthropic_plain(oa, an):
    m = an.messages.create(
        model="deepseek-chat",
        max_tokens=200,
        messages=[{"role": "user", "content": "ECHO:Bonjour."}],
    )
    eq(m.type, "message", "type")
    eq(m.role, "assistant", "role")
    eq([b.type for b in m.content], ["text"], "blocks")
    eq(m.content[0].text, "Bonjour.", "text")
    eq(m.stop_reason, "end_turn", "stop_reason")
    eq(m.usage.output_tokens, len("Bonjour."), "output tokens")
    eq(m.usage.input_tokens, 0, "input tokens")
    truthy(m.usage.cache_creation_input_tokens > 0, "cache creation tokens")


@check
def anthropic_thinking_tools(oa, an):
    m = an.messages.create(
        model="deepseek-v4-flash",
        max_tokens=1000,
        thinking={"type": "enabled", "budget_tokens": 512},
        tools=ANTHROPIC_TOOLS,
        system="You are terse.",
        messages=[{"role": "user", "content": "ECHO:Need weather.</think>" + CALL_SCRIPT}],
    )
    eq([b.type for b in m.content], ["thinking", "text", "tool_use"], "blocks")
    eq(m.content[0].thinking, "Need weather.", "thinking")
    eq(m.content[0].signature, m.id, "signature")
    eq(m.content[1].text, "Checking.", "text")
    tu = m.content[2]
    truthy(tu.id.startswith("toolu_"), "tool_use id")
    eq(tu.name, "get_weather", "tool name")
    eq(tu.input, WEATHER_ARGS, "tool input")
    eq(m.stop_reason, "tool_use", "stop_reason")
    # Tool result round trip.
    m2 = an.messages.create(
        model="deepseek-v4-flash",
        max_tokens=1000,
        thinking={"type": "disabled"},
        tools=ANTHROPIC_TOOLS,
        messages=[
            {"role": "user", "content": "ECHO:Need weather.</think>" + CALL_SCRIPT},
            {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in m.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tu.id, "content": "ECHO:It is sunny."}]},
        ],
    )
    eq(m2.content[-1].text, "It is sunny.", "answer after tool_result")


@check
def anthropic_stream_helper(oa, an):
    with an.messages.stream(
        model="deepseek-v4-flash",
        max_tokens=1000,
        tools=ANTHROPIC_TOOLS,
        messages=[{"role": "user", "content": "ECHO:Think.</think>" + CALL_SCRIPT}],
    ) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    eq(text, "Checking.", "text_stream")
    eq([b.type for b in final.content], ["thinking", "text", "tool_use"], "final blocks")
    eq(final.content[0].thinking, "Think.", "final thinking")
    eq(final.content[0].signature, final.id, "final signature")
    eq(final.content[2].input, WEATHER_ARGS, "final tool input")
    eq(final.stop_reason, "tool_use", "final stop_reason")
    truthy(final.usage.output_tokens > 0, "final usage")


@check
def anthropic_raw_stream(oa, an):
    types = []
    for ev in an.messages.create(
        model="deepseek-chat",
        max_tokens=100,
        stream=True,
        messages=[{"role": "user", "content": "ECHO:stream me"}],
    ):
        types.append(ev.type)
    eq(types[0], "message_start", "first event")
    eq(types[-2:], ["message_delta", "message_stop"], "last events")
    truthy("content_block_delta" in types, "deltas")


@check
def anthropic_claude_code_shapes(oa, an):
    # A system turn in the middle of messages (recent Claude Code sends them).
    msgs = [
        {"role": "user", "content": "Q1"},
        {"role": "assistant", "content": "A1"},
        {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
        {"role": "user", "content": "ECHO:abcdefgh"},
    ]
    m = an.messages.create(model="deepseek-chat", max_tokens=100, system="You are terse.", messages=msgs)
    truthy(m.id.startswith("msg_"), "msg_ id")
    eq(m.content[0].text, "abcdefgh", "text")
    n = an.messages.count_tokens(model="deepseek-chat", system="You are terse.", messages=msgs).input_tokens
    total = m.usage.input_tokens + m.usage.cache_read_input_tokens + m.usage.cache_creation_input_tokens
    eq(n, total, "count_tokens = prompt tokens")
    m = an.messages.create(model="deepseek-chat", max_tokens=100, stop_sequences=["de"], messages=msgs)
    eq(m.content[0].text, "abc", "text before the stop sequence")
    eq((m.stop_reason, m.stop_sequence), ("stop_sequence", "de"), "stop sequence")
    with an.messages.stream(model="deepseek-chat", max_tokens=100, stop_sequences=["de"], messages=msgs) as s:
        final = s.get_final_message()
    truthy(final.id.startswith("msg_"), "streamed msg_ id")
    eq((final.stop_reason, final.stop_sequence), ("stop_sequence", "de"), "streamed stop sequence")


@check
def anthropic_errors(oa, an):
    try:
        an.messages.create(model="claude-nope", max_tokens=10, messages=[{"role": "user", "content": "x"}])
        raise AssertionError("unknown model accepted")
    except anthropic.NotFoundError as e:
        eq(e.status_code, 404, "status")
        eq(e.body["error"]["type"], "not_found_error", "error type")
    try:
        an.messages.create(model="deepseek-chat", max_tokens=10, messages=[])
        raise AssertionError("empty messages accepted")
    except anthropic.BadRequestError as e:
        eq(e.status_code, 400, "status")
        eq(e.body["type"], "error", "anthropic error shape")


# ---------------------------------------------------------------- noise mode

NOISE_CHECKS = []


def noise_check(fn):
    NOISE_CHECKS.append(fn)
    return fn


FINISH = {"stop", "length", "tool_calls", "error"}
N = 12  # tokens per request: the demo model is slow-ish on CPU


def chat_shape(r, usage=True):
    eq(r.object, "chat.completion", "object")
    truthy(r.id.startswith("chatcmpl-"), "id")
    c = r.choices[0]
    eq(c.index, 0, "index")
    eq(c.message.role, "assistant", "role")
    truthy(isinstance(c.message.content, str), "content is a string")
    truthy(c.finish_reason in FINISH, f"finish_reason {c.finish_reason}")
    rc = extra(c.message, "reasoning_content")
    truthy(rc is None or isinstance(rc, str), "reasoning_content")
    for tc in c.message.tool_calls or []:
        truthy(tc.id.startswith("call_"), "call id")
        json.loads(tc.function.arguments)
    if not usage:
        return
    u = r.usage
    truthy(u.completion_tokens <= N and u.prompt_tokens > 0, f"usage {u}")
    eq(u.total_tokens, u.prompt_tokens + u.completion_tokens, "total")
    truthy(isinstance(u.prompt_tokens_details.cached_tokens, int), "cached_tokens")


@noise_check
def noise_models(oa, an):
    openai_models(oa, an)


@noise_check
def noise_chat(oa, an):
    for model, tools in [("deepseek-chat", None), ("deepseek-v4-flash", None), ("deepseek-chat", OPENAI_TOOLS), ("deepseek-reasoner", OPENAI_TOOLS)]:
        kw = {"tools": tools} if tools else {}
        chat_shape(oa.chat.completions.create(model=model, max_tokens=N, messages=[{"role": "user", "content": "Say hi"}], **kw))


@noise_check
def noise_chat_stream(oa, an):
    for model in ["deepseek-chat", "deepseek-v4-flash"]:
        n, finish, usage, first = 0, None, None, True
        for ch in oa.chat.completions.create(
            model=model, max_tokens=N, messages=[{"role": "user", "content": "Say hi"}], tools=OPENAI_TOOLS,
            stream=True, stream_options={"include_usage": True},
        ):
            eq(ch.object, "chat.completion.chunk", "chunk object")
            if ch.usage is not None:
                usage = ch.usage
            if not ch.choices:
                continue
            if first:
                eq(ch.choices[0].delta.role, "assistant", "role chunk")
                first = False
            n += 1
            finish = ch.choices[0].finish_reason or finish
        truthy(finish in FINISH, f"finish {finish}")
        truthy(usage is not None and usage.completion_tokens <= N, "usage chunk")
    with oa.chat.completions.stream(model="deepseek-chat", max_tokens=N, messages=[{"role": "user", "content": "hi"}]) as s:
        for _ in s:
            pass
        try:
            final = s.get_final_completion()
        except openai.LengthFinishReasonError as e:  # noise rarely ends before max_tokens
            final = e.completion
        chat_shape(final, usage=False)  # no include_usage: streams carry no usage


@noise_check
def noise_completions(oa, an):
    r = oa.completions.create(model="deepseek-chat", prompt="Once upon", max_tokens=N)
    eq(r.object, "text_completion", "object")
    truthy(isinstance(r.choices[0].text, str), "text")
    truthy(r.choices[0].finish_reason in FINISH, "finish")
    chunks = list(oa.completions.create(model="deepseek-v4-flash", prompt="Once upon", max_tokens=N, stream=True))
    truthy(chunks[-1].choices[0].finish_reason in FINISH, "stream finish")


def response_shape(r):
    eq(r.object, "response", "object")
    truthy(r.id.startswith("resp_"), "id")
    truthy(r.status in {"completed", "incomplete", "failed"}, f"status {r.status}")
    for o in r.output:
        truthy(o.type in {"reasoning", "message", "function_call"}, f"item {o.type}")
    truthy(isinstance(r.output_text, str), "output_text")
    truthy(r.usage.output_tokens <= N, "usage")


@noise_check
def noise_responses(oa, an):
    for model, reasoning in [("deepseek-chat", None), ("deepseek-v4-flash", {"effort": "high", "summary": "auto"})]:
        kw = {"reasoning": reasoning} if reasoning else {}
        response_shape(oa.responses.create(model=model, input="hi", max_output_tokens=N, tools=RESPONSES_TOOLS, **kw))
        with oa.responses.stream(model=model, input="hi", max_output_tokens=N, tools=RESPONSES_TOOLS, **kw) as s:
            events = list(s)
        types = [ev.type for ev in events]
        # The helper's get_final_response() needs response.completed; a
        # max_output_tokens cut ends with response.incomplete instead.
        final = events[-1].response
        eq(types[0], "response.created", "first event")
        truthy(types[-1] in {"response.completed", "response.incomplete", "response.failed"}, "terminal event")
        response_shape(final)


def message_shape(m):
    eq(m.type, "message", "type")
    eq(m.role, "assistant", "role")
    truthy(len(m.content) >= 1, "content blocks")
    for b in m.content:
        truthy(b.type in {"thinking", "text", "tool_use"}, f"block {b.type}")
    truthy(m.stop_reason in {"end_turn", "max_tokens", "tool_use"}, f"stop_reason {m.stop_reason}")
    truthy(m.usage.output_tokens <= N, "usage")
    truthy(isinstance(m.usage.cache_read_input_tokens, int), "cache read tokens")


@noise_check
def noise_messages(oa, an):
    for thinking in [{"type": "enabled", "budget_tokens": 8}, {"type": "disabled"}]:
        message_shape(an.messages.create(model="deepseek-v4-flash", max_tokens=N, thinking=thinking, tools=ANTHROPIC_TOOLS,
                                         messages=[{"role": "user", "content": "hi"}]))
        with an.messages.stream(model="deepseek-v4-flash", max_tokens=N, thinking=thinking, tools=ANTHROPIC_TOOLS,
                                messages=[{"role": "user", "content": "hi"}]) as s:
            for _ in s:
                pass
            message_shape(s.get_final_message())


@noise_check
def noise_count_tokens(oa, an):
    # The real tokenizer: count_tokens counts exactly the prompt /v1/messages prefills.
    msgs = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Say hi"},
    ]
    for thinking in [{"type": "enabled", "budget_tokens": 8}, {"type": "disabled"}]:
        kw = dict(model="deepseek-v4-flash", thinking=thinking, tools=ANTHROPIC_TOOLS, system="You are terse.", messages=msgs)
        n = an.messages.count_tokens(**kw).input_tokens
        m = an.messages.create(max_tokens=N, **kw)
        message_shape(m)
        u = m.usage
        eq(n, u.input_tokens + u.cache_read_input_tokens + u.cache_creation_input_tokens, "count_tokens = prompt tokens")


@noise_check
def noise_errors(oa, an):
    openai_errors(oa, an)
    anthropic_errors(oa, an)


def auth_checks(url, key):
    bad = openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0)
    try:
        bad.models.list()
        raise AssertionError("wrong key accepted")
    except openai.AuthenticationError as e:
        eq(e.status_code, 401, "openai status")
    good = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)
    eq(good.chat.completions.create(model="deepseek-chat", messages=[{"role": "user", "content": "ECHO:ok"}]).choices[0].message.content, "ok", "authorized chat")
    bad_an = anthropic.Anthropic(base_url=url, api_key="wrong", max_retries=0)
    try:
        bad_an.messages.create(model="deepseek-chat", max_tokens=10, messages=[{"role": "user", "content": "x"}])
        raise AssertionError("wrong key accepted (anthropic)")
    except anthropic.AuthenticationError as e:
        eq(e.status_code, 401, "anthropic status")
    good_an = anthropic.Anthropic(base_url=url, api_key=key, max_retries=0)
    eq(good_an.messages.create(model="deepseek-chat", max_tokens=10, messages=[{"role": "user", "content": "ECHO:ok"}]).content[0].text, "ok", "authorized messages")


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    for mod, prefix in [(openai, PINNED["openai"]), (anthropic, PINNED["anthropic"])]:
        if not mod.__version__.startswith(prefix):
            print(f"{mod.__name__} {mod.__version__} is not the pinned {prefix}x (see requirements.txt)", file=sys.stderr)
            return 2
    url = argv[1].rstrip("/")
    oa = openai.OpenAI(base_url=url + "/v1", api_key="dsv4-local", max_retries=0, timeout=120)
    an = anthropic.Anthropic(base_url=url, api_key="dsv4-local", max_retries=0, timeout=120)
    failures = []
    checks = NOISE_CHECKS if "--noise" in argv else CHECKS
    for fn in checks:
        try:
            fn(oa, an)
            print(f"PASS {fn.__name__}")
        except Exception:
            failures.append(fn.__name__)
            print(f"FAIL {fn.__name__}\n{traceback.format_exc()}", file=sys.stderr)
    if "--auth-url" in argv:
        auth_url = argv[argv.index("--auth-url") + 1]
        key = argv[argv.index("--api-key") + 1]
        try:
            auth_checks(auth_url.rstrip("/"), key)
            print("PASS auth_checks")
        except Exception:
            failures.append("auth_checks")
            print(f"FAIL auth_checks\n{traceback.format_exc()}", file=sys.stderr)
    print(f"{len(checks) + ('--auth-url' in argv) - len(failures)} passed, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
