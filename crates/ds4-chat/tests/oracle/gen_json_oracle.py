"""Oracle for ds4-chat's Python-exact JSON handling.

Writes json_oracle.json: for random JSON texts (numbers in every spelling,
Unicode and control-character strings, duplicate keys, nesting) and some
invalid ones, the output of json.dumps(json.loads(text), ensure_ascii=False)
— what DeepSeek's official encoder does to tool arguments and schemas — or
null when json.loads raises. Python stdlib only (see requirements.txt).

Run: /work/pyenv/bin/python gen_json_oracle.py > json_oracle.json
"""
import json
import random
import struct
import sys

rng = random.Random(20260126)

CHARS = ["a", "Z", " ", "\"", "\\", "/", "\n", "\t", "\r", "\b", "\f", "\x01", "\x1f", "\x7f", "é", "中",
         "😀", "\u2028", "\u00a0", "<", ">", "&"]


def rand_str():
    return "".join(rng.choice(CHARS) for _ in range(rng.randrange(6)))


def rand_number_text():
    k = rng.randrange(10)
    if k == 0:
        return str(rng.randrange(-10**30, 10**30))
    if k == 1:
        return rng.choice(["0", "-0", "-0.0", "0.0", "1e5", "1E5", "1.50", "2.5E-3", "1e400", "-1e400",
                           "1e-400", "123.456e2", "1e16", "1e15", "0.0001", "0.00001", "9007199254740993",
                           "1.7976931348623157e308", "5e-324", "NaN", "Infinity", "-Infinity"])
    if k in (2, 3):
        # random finite double via bits
        while True:
            v = struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0]
            if v == v and v not in (float("inf"), float("-inf")):
                return repr(v)
    if k == 4:
        return "%d.%de%d" % (rng.randrange(100), rng.randrange(1000), rng.randrange(-30, 30))
    if k == 5:
        return "%.*f" % (rng.randrange(8), rng.uniform(-1e6, 1e6))
    if k == 6:
        return repr(rng.uniform(-1, 1) * 10 ** rng.randrange(-20, 25))
    return str(rng.randrange(-1000, 1000))


def rand_value(depth=0):
    k = rng.randrange(7 if depth < 3 else 4)
    if k == 0:
        return rng.choice(["null", "true", "false"])
    if k == 1:
        return rand_number_text()
    if k in (2, 3):
        s = json.dumps(rand_str(), ensure_ascii=rng.random() < 0.5)
        return s
    if k == 4:
        return "[" + (", " if rng.random() < 0.5 else ",").join(rand_value(depth + 1) for _ in range(rng.randrange(4))) + "]"
    keys = [rand_str() for _ in range(rng.randrange(4))]
    if keys and rng.random() < 0.3:
        keys.append(keys[0])  # duplicate key
    ws = rng.choice(["", " ", "\n  "])
    return "{" + ws + ("," + ws).join(json.dumps(k) + ws + ":" + ws + rand_value(depth + 1) for k in keys) + ws + "}"


cases = []
for _ in range(600):
    cases.append(rand_value())
cases += ["", "01", "1.", "[1,]", "{\"a\" 1}", "\"x\ny\"", "\"\\x\"", "{} x", "  [1 , 2 ]  ", "\"\\ud83d\\ude00\"",
          "-", "- 1", ".5", "1e", "1e+", "tru", "[", "{\"a\":1,}", "nul"]

out = []
for t in cases:
    try:
        r = json.dumps(json.loads(t), ensure_ascii=False)
    except Exception:
        r = None
    out.append({"in": t, "out": r})
# Float repr: random bit patterns, short decimals, powers of ten and subnormals.
floats = []
for _ in range(1500):
    v = struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0]
    if v == v:
        floats.append(v)
for _ in range(800):
    floats.append(float("%d.%de%d" % (rng.randrange(10000), rng.randrange(1000), rng.randrange(-330, 310))))
for e in range(-325, 309):
    floats.append(float("1e%d" % e))
floats += [5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, 0.1, 0.2, 0.30000000000000004, 1 / 3, 2 / 3,
           9007199254740993.0, 123456789.123456789, -0.0, 1e16, 9999999999999998.0, 0.0001, 0.00009999999999999999]
float_cases = [{"bits": "%016x" % struct.unpack("<Q", struct.pack("<d", v))[0], "repr": json.dumps(v)} for v in floats]

json.dump({"python": sys.version.split()[0], "cases": out, "floats": float_cases}, sys.stdout, ensure_ascii=True, indent=0)
sys.stdout.write("\n")
