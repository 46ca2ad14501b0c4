#!/usr/bin/env python3
"""Random conversations rendered by DeepSeek's official V4 encoder (oracle fixture).

Usage:
    python gen_cases.py --encoder /path/to/encoding_dsv4.py \
        [--seed 20261126] [--count 230] [--golden DIR] \
        [--out crates/ds4-chat/tests/fixtures/official_random.json]

The official encoder (`encoding/encoding_dsv4.py` of DeepSeek V4, public) is
NOT part of this repository: pass the path of a local copy. It is only imported
and called here; its output is what the fixture records.

Every case is an OpenAI chat-completions request body, written as raw JSON text
(odd number spellings, escapes and whitespace included) plus the thinking
controls. The oracle input is built exactly like the chat-golden cases:
`messages = json.loads(body)["messages"]`, tools attached as
`messages[0]["tools"]` (tool cases always start with a system message),
`encode_messages(messages, thinking_mode, reasoning_effort=effort)`.

One convention is ours, not the oracle's: OpenAI content-part arrays in
system/user/assistant messages are flattened by concatenating their text parts
(the official encoder does not accept lists there), so the oracle gets the
flattened string. Tool-message content lists go to the oracle unchanged.

Cases the oracle raises on are kept in `errors` with the exception text.

For each assistant message, the official rendering of that message as model
output (`encode([u, a]) - encode([u])`) is parsed with the
official `parse_message_from_completion_text`; the result (or its error) goes
into `parses`.
"""

import argparse
import importlib.util
import json
import os
import random
import sys


def load_encoder(path):
    spec = importlib.util.spec_from_file_location("encoding_dsv4_official", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ---------------------------------------------------------------- raw JSON text


class Raw:
    """A JSON value given by its exact source text (numbers with odd spellings)."""

    def __init__(self, text):
        self.text = text


def emit_str(rng, s, ascii_only=None):
    if ascii_only is None:
        ascii_only = rng.random() < 0.15
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "/" and rng.random() < 0.3:
            out.append("\\/")
        elif ch == "\n":
            out.append("\\n" if rng.random() < 0.8 else "\\u000a")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\b":
            out.append("\\b")
        elif ch == "\f":
            out.append("\\f")
        elif o < 0x20 or o == 0x7F:
            out.append("\\u%04x" % o if rng.random() < 0.5 else "\\u%04X" % o)
        elif o > 0x7E and (ascii_only or rng.random() < 0.05):
            if o > 0xFFFF:
                v = o - 0x10000
                out.append("\\u%04x\\u%04x" % (0xD800 + (v >> 10), 0xDC00 + (v & 0x3FF)))
            else:
                out.append("\\u%04x" % o)
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def emit(rng, v, compact):
    """Raw JSON text of `v` with random (valid) spacing and escapes."""
    sep = "" if compact else rng.choice(["", " ", "  ", "\n"])
    if isinstance(v, Raw):
        return v.text
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, str):
        return emit_str(rng, v)
    if isinstance(v, list):
        return "[" + sep + ("," + sep).join(emit(rng, x, compact) for x in v) + sep + "]"
    if isinstance(v, dict):
        items = [emit_str(rng, k) + ":" + sep + emit(rng, x, compact) for k, x in v.items()]
        return "{" + sep + ("," + sep).join(items) + sep + "}"
    if isinstance(v, DupObj):
        items = [emit_str(rng, k) + ":" + sep + emit(rng, x, compact) for k, x in v.pairs]
        return "{" + sep + ("," + sep).join(items) + sep + "}"
    raise TypeError(type(v))


class DupObj:
    """An object written with repeated keys (Python keeps the last value at the first position)."""

    def __init__(self, pairs):
        self.pairs = pairs


# ---------------------------------------------------------------- random content

FRAGMENTS = [
    "Hello", "What is the weather in Rome?", "ok", "yes", "Zürich", "日本語のテキスト", "🎉🚀",
    "emoji 👩‍👩‍👧", "Ünïcödé", "مرحبا", "שלום", "Привет", "a\u0301", "\u200b", "\u2028", "\u00a0",
    "<b>bold</b>", "</tool_result>", "<tool_result>x</tool_result>", "&amp; &lt; &gt;", "a && b > c",
    '<｜DSML｜parameter name="x" string="true">', "</｜DSML｜parameter>", "<｜DSML｜invoke name=\"f\">",
    "\n\n<｜DSML｜tool_calls>\n", "</｜DSML｜tool_calls>", "｜DSML｜", "<｜User｜>", "<｜Assistant｜>",
    "<think>", "</think>", "<｜end▁of▁sentence｜>", "<｜begin▁of▁sentence｜>", "<|User|>",
    '"quoted"', "it's", "back\\slash", "C:\\path\\to", "tab\there", "line1\nline2", "\r\n", "  ",
    "\n", "{\"json\": [1, 2]}", "$TOOL_NAME", "{content}", "{0}", "%s", "null", "NaN", "1e5",
    "\x00nul", "\x1b[31mred", "\x7f", "ÿ", "end.", "x" * 40, "The quick brown fox.",
]


def rstr(rng, max_frag=4, allow_empty=True):
    n = rng.randint(0 if allow_empty else 1, max_frag)
    return "".join(rng.choice(FRAGMENTS) + rng.choice(["", " ", "\n", ""]) for _ in range(n))


NUM_SPELLINGS = [
    "0", "-0", "1", "-1", "42", "007", "1.5", "2.50", "-0.0", "0.0", "1e5", "1E5", "1e+5", "1.0e-7",
    "2.5E-3", "1e400", "-1e400", "123456789012345678901234567890", "-98765432109876543210",
    "9007199254740993", "3.141592653589793238462643383279", "0.1", "1e-320", "5e-324",
    "1.7976931348623157e308", "100000000000000000000.0", "1e16", "1e15", "123e-2", "0.000001",
    "0.0000001", "12345678.9", "1e22", "1e21", "-2.0", "4.0E0",
]
# Leading-zero spellings are not JSON; "007" is filtered out below.
NUM_SPELLINGS = [n for n in NUM_SPELLINGS if not (len(n) > 1 and n[0] == "0" and n[1].isdigit())]

NAME_POOL = [
    "get_weather", "search", "run.sh", "db-query", "f", "a_very_long_function_name_with_many_parts",
    "calc", "read_file", "名前", "tool_ü", "x1", "send_email", "$weird", "with space", "ns.sub.fn",
]

KEY_POOL = [
    "location", "query", "n", "values", "nested", "flag", "opt", "ratio", "名前", "key with space",
    "a\"b", "<k>", "", "x", "count", "data", "path", "arguments", "string", "name",
]


def rvalue(rng, depth=0):
    r = rng.random()
    if depth > 2:
        r = min(r, 0.69)
    if r < 0.35:
        return rstr(rng, 3)
    if r < 0.55:
        return Raw(rng.choice(NUM_SPELLINGS))
    if r < 0.65:
        return rng.choice([True, False, None])
    if r < 0.7:
        return rng.randint(-10**25, 10**25)
    if r < 0.85:
        return [rvalue(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {rng.choice(KEY_POOL): rvalue(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def rarguments(rng):
    """The `arguments` string of a history tool call."""
    r = rng.random()
    if r < 0.05:
        return ""
    if r < 0.1:
        return "{}"
    if r < 0.14:
        return rstr(rng, 2, allow_empty=False)  # not JSON: becomes an "arguments" string param
    if r < 0.17:
        return rng.choice(["[1, 2]", '"s"', "3", "null", "true"])  # non-object JSON
    compact = rng.random() < 0.5
    if r < 0.25:
        k = rng.choice(KEY_POOL)
        pairs = [(k, rvalue(rng)), (rng.choice(KEY_POOL), rvalue(rng)), (k, rvalue(rng))]
        return emit(rng, DupObj(pairs), compact)
    obj = {}
    for _ in range(rng.randint(1, 5)):
        obj[rng.choice(KEY_POOL)] = rvalue(rng)
    text = emit(rng, obj, compact)
    if rng.random() < 0.1:
        text = rng.choice([" ", "\n", "\t"]) + text + rng.choice(["", " ", "\n"])
    return text


def rschema(rng, depth=0):
    t = rng.choice(["string", "number", "integer", "boolean", "array", "object", "null"])
    s = {"type": t if rng.random() < 0.85 else [t, "null"]}
    if rng.random() < 0.4:
        s["description"] = rstr(rng, 2)
    if t == "string" and rng.random() < 0.3:
        s["enum"] = [rstr(rng, 1) for _ in range(rng.randint(1, 3))]
    if t in ("number", "integer") and rng.random() < 0.5:
        s["minimum"] = Raw(rng.choice(NUM_SPELLINGS))
        s["default"] = Raw(rng.choice(NUM_SPELLINGS))
    if t == "array" and depth < 3:
        s["items"] = rschema(rng, depth + 1)
    if t == "object" and depth < 3:
        props = {}
        for _ in range(rng.randint(0, 4)):
            props[rng.choice(KEY_POOL)] = rschema(rng, depth + 1)
        s["properties"] = props
        if props and rng.random() < 0.5:
            s["required"] = rng.sample(list(props), rng.randint(1, len(props)))
        if rng.random() < 0.3:
            s["additionalProperties"] = False
    if rng.random() < 0.05:
        s = {"anyOf": [s, {"$ref": "#/$defs/x"}]}
    return s


def rtool(rng, name):
    f = {"name": name}
    if rng.random() < 0.8:
        f["description"] = rstr(rng, 3)
    if rng.random() < 0.9:
        params = {"type": "object", "properties": {}}
        for _ in range(rng.randint(0, 5)):
            params["properties"][rng.choice(KEY_POOL)] = rschema(rng)
        if params["properties"] and rng.random() < 0.6:
            params["required"] = rng.sample(list(params["properties"]), 1)
        if rng.random() < 0.2:
            params["$defs"] = {"x": {"type": "string"}}
        f["parameters"] = params
    if rng.random() < 0.2:
        f["strict"] = rng.choice([True, False])
    if rng.random() < 0.2:
        # key order is significant: move "name" last
        f = dict(list(f.items())[1:] + [("name", name)])
    return {"type": "function", "function": f}


def rcontent(rng, allow_parts=True, allow_none=False):
    r = rng.random()
    if allow_none and r < 0.08:
        return None
    if r < 0.15:
        return ""
    if allow_parts and r < 0.25:
        parts = [{"type": "text", "text": rstr(rng, 2)} for _ in range(rng.randint(1, 3))]
        return parts
    return rstr(rng, 4, allow_empty=False)


def flatten(content):
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return content


def rconversation(rng):
    has_tools = rng.random() < 0.45
    tool_names = list(dict.fromkeys(rng.choice(NAME_POOL) for _ in range(rng.randint(1, 4))))
    msgs = []
    if has_tools or rng.random() < 0.5:
        m = {"role": "system", "content": rcontent(rng, allow_none=True) if rng.random() < 0.8 else ""}
        if rng.random() < 0.08:
            m["response_format"] = {"type": "json_schema", "json_schema": {"name": "x", "schema": rschema(rng)}}
        msgs.append(m)
    n_turns = rng.randint(1, 5)
    pending_ids = []
    call_counter = [0]
    for t in range(n_turns):
        r = rng.random()
        if r < 0.07:
            msgs.append({"role": "system", "content": rcontent(rng)})
        if pending_ids:
            # tool results for the previous calls, in random order, maybe with odd ids
            ids = pending_ids[:]
            rng.shuffle(ids)
            for cid in ids:
                tm = {"role": "tool", "content": rcontent(rng, allow_parts=False)}
                rr = rng.random()
                if rr < 0.85:
                    tm["tool_call_id"] = cid
                elif rr < 0.92:
                    tm["tool_call_id"] = "unknown_" + str(rng.randint(0, 9))
                if rng.random() < 0.1:
                    tm["content"] = [
                        {"type": "text", "text": rstr(rng, 2)},
                        {"type": rng.choice(["text", "image", "image_url"]), "text": rstr(rng, 1)},
                    ]
                msgs.append(tm)
            pending_ids = []
            if rng.random() < 0.3:
                msgs.append({"role": "user", "content": rcontent(rng)})
        else:
            for _ in range(1 if rng.random() < 0.85 else 2):
                msgs.append({"role": "user", "content": rcontent(rng)})
        last = t == n_turns - 1
        if last and rng.random() < 0.6:
            break
        a = {"role": "assistant"}
        c = rcontent(rng, allow_none=True)
        if c is not None or rng.random() < 0.5:
            a["content"] = c
        rr = rng.random()
        if rr < 0.5:
            a["reasoning_content"] = rstr(rng, 3)
        elif rr < 0.6:
            a["reasoning_content"] = None if rng.random() < 0.5 else ""
        if has_tools and rng.random() < 0.6 or (not has_tools and rng.random() < 0.1):
            calls = []
            for _ in range(rng.randint(1, 3)):
                call_counter[0] += 1
                tc = {"type": "function", "function": {"name": rng.choice(tool_names), "arguments": rarguments(rng)}}
                if rng.random() < 0.04:
                    # not a string (some clients send the object itself)
                    tc["function"]["arguments"] = rng.choice([rvalue(rng), {"k": rvalue(rng)}, None])
                rr = rng.random()
                if rr < 0.85:
                    tc["id"] = "call_%d_%d" % (call_counter[0], rng.randint(0, 999))
                    pending_ids.append(tc["id"])
                elif rr < 0.9:
                    tc["id"] = calls[0]["id"] if calls and "id" in calls[0] else "dup"
                    pending_ids.append(tc["id"])
                calls.append(tc)
            a["tool_calls"] = calls
        elif rng.random() < 0.05:
            a["tool_calls"] = []
        msgs.append(a)
        if rng.random() < 0.05:
            msgs.append({"role": "assistant", "content": rcontent(rng), "reasoning_content": rstr(rng, 1)})
    if pending_ids and rng.random() < 0.7:
        for cid in pending_ids:
            msgs.append({"role": "tool", "tool_call_id": cid, "content": rcontent(rng, allow_parts=False)})
    # response_format on system messages (any position; also the plain {"type": "text"})
    for m in msgs:
        if m["role"] == "system" and rng.random() < 0.1:
            m["response_format"] = rng.choice([
                {"type": "json_object"},
                {"type": "text"},
                {"type": "json_schema", "json_schema": {"name": rstr(rng, 1), "schema": rschema(rng)}},
                {},
            ])
    # odd orders
    r = rng.random()
    if r < 0.04 and msgs[0]["role"] != "system":
        msgs.insert(0, {"role": "assistant", "content": rcontent(rng)})
    elif r < 0.07:
        msgs.append({"role": "system", "content": rcontent(rng)})
    elif r < 0.09 and msgs[0]["role"] != "system":
        msgs.insert(0, {"role": "tool", "tool_call_id": "x", "content": rcontent(rng, allow_parts=False)})
    tools = [rtool(rng, n) for n in tool_names] if has_tools else None
    return msgs, tools


def rodd(rng):
    """Small odd conversations: empty, system only, assistant first, several systems, tool first."""
    k = rng.randint(0, 7)
    if k == 0:
        return [{"role": "system", "content": rstr(rng, 2)}], None
    if k == 1:
        return [{"role": "assistant", "content": rstr(rng, 2), "reasoning_content": rstr(rng, 1)}], None
    if k == 2:
        return [{"role": "system", "content": rstr(rng, 1)}, {"role": "system", "content": rstr(rng, 1)},
                {"role": "user", "content": rstr(rng, 1)}, {"role": "system", "content": rstr(rng, 1)}], None
    if k == 3:
        return [{"role": "tool", "tool_call_id": "a", "content": rstr(rng, 1)},
                {"role": "tool", "tool_call_id": "b", "content": rstr(rng, 1)},
                {"role": "assistant", "content": rstr(rng, 1)}], None
    if k == 4:
        return [{"role": "user", "content": ""}], None
    if k == 5:
        msgs = [{"role": "system", "content": ""}, {"role": "assistant", "content": "", "tool_calls": [
            {"id": "a", "type": "function", "function": {"name": "f", "arguments": rarguments(rng)}}]}]
        return msgs, [rtool(rng, "f")]
    if k == 6:
        return [{"role": "user", "content": rstr(rng, 1)}, {"role": "assistant", "content": rstr(rng, 1)},
                {"role": "assistant", "content": rstr(rng, 1), "reasoning_content": rstr(rng, 1)},
                {"role": "user", "content": rstr(rng, 1)}, {"role": "user", "content": rstr(rng, 1)}], None
    return [{"role": "system", "content": rstr(rng, 1), "response_format": {"type": "text"}},
            {"role": "user", "content": rstr(rng, 1)},
            {"role": "system", "content": rstr(rng, 1), "response_format": {"type": "json_object"}}], None


def body_text(rng, msgs, tools):
    compact = rng.random() < 0.5
    body = {"messages": msgs}
    if tools is not None:
        body["tools"] = tools
    return emit(rng, body, compact)


def oracle_messages(body):
    msgs = body["messages"]
    for m in msgs:
        if m.get("role") in ("system", "user", "assistant") and isinstance(m.get("content"), list):
            m["content"] = flatten(m["content"])
    if body.get("tools") is not None:
        msgs[0]["tools"] = body["tools"]
    return msgs


def completion_parses(enc, msgs, mode):
    """Official rendering of each assistant message, as model output, and its official parse."""
    out = []
    for m in msgs:
        if m.get("role") != "assistant":
            continue
        a = {k: v for k, v in m.items() if k in ("role", "content", "reasoning_content", "tool_calls")}
        u = {"role": "user", "content": "q"}
        try:
            prefix = enc.encode_messages([dict(u)], thinking_mode=mode)
            full = enc.encode_messages([dict(u), a], thinking_mode=mode)
        except Exception:
            continue
        assert full.startswith(prefix)
        text = full[len(prefix):]
        rec = {"text": text}
        try:
            p = enc.parse_message_from_completion_text(text, thinking_mode=mode)
            rec["content"] = p["content"]
            rec["reasoning"] = p["reasoning_content"]
            rec["calls"] = [[c["function"]["name"], c["function"]["arguments"]] for c in p["tool_calls"]]
        except Exception as e:  # noqa: BLE001 - the oracle's verdict is recorded
            rec["error"] = "%s: %s" % (type(e).__name__, str(e)[:80])
        out.append(rec)
    return out


def check_golden(enc, golden_dir):
    n = 0
    for name in sorted(os.listdir(golden_dir)):
        if not (name.endswith(".json") and name[0].isdigit()):
            continue
        case = json.load(open(os.path.join(golden_dir, name), encoding="utf-8"))
        msgs = case["messages"]
        if case["tools"] is not None:
            msgs[0]["tools"] = case["tools"]
        got = enc.encode_messages(msgs, thinking_mode=case["thinking_mode"],
                                  reasoning_effort=case["reasoning_effort"])
        if got != case["rendered"]:
            sys.exit("golden case %s differs from this encoder" % name)
        n += 1
    print("encoder reproduces all %d golden cases" % n, file=sys.stderr)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--encoder", required=True, help="path to the official encoding_dsv4.py")
    ap.add_argument("--seed", type=int, default=20261126)
    ap.add_argument("--count", type=int, default=230)
    ap.add_argument("--golden", help="chat-golden dir to verify the encoder against first")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "..", "crates", "ds4-chat",
                                                  "tests", "fixtures", "official_random.json"))
    args = ap.parse_args()
    enc = load_encoder(args.encoder)
    if args.golden:
        check_golden(enc, args.golden)
    rng = random.Random(args.seed)
    cases, errors = [], []
    i = 0
    while len(cases) < args.count:
        i += 1
        msgs, tools = rodd(rng) if rng.random() < 0.08 else rconversation(rng)
        text = body_text(rng, msgs, tools)
        mode = rng.choice(["chat", "thinking", "thinking"])
        effort = rng.choice([None, None, "high", "max"])
        rec = {"id": i, "body": text, "mode": mode, "effort": effort}
        try:
            om = oracle_messages(json.loads(text))
            rendered = enc.encode_messages(om, thinking_mode=mode, reasoning_effort=effort)
            rendered.encode("utf-8")
        except Exception as e:  # noqa: BLE001 - the oracle's verdict is recorded
            rec["error"] = "%s: %s" % (type(e).__name__, str(e)[:120])
            errors.append(rec)
            continue
        rec["rendered"] = rendered
        parses = completion_parses(enc, oracle_messages(json.loads(text)), mode)
        if parses:
            rec["parses"] = parses
        cases.append(rec)
    out = {
        "generator": "tools/chat-oracle/gen_cases.py",
        "seed": args.seed,
        "cases": cases,
        "errors": errors,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    print("%d cases, %d oracle errors -> %s (%d bytes)" % (len(cases), len(errors), args.out,
                                                          os.path.getsize(args.out)), file=sys.stderr)


if __name__ == "__main__":
    main()
