//! Python `json.dumps(json.loads(t), ensure_ascii=False)` reproduced exactly
//! (oracle data from tests/oracle/gen_json_oracle.py).

use ds4_chat::json::Json;

#[test]
fn matches_python_json_roundtrip() {
    let path =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/oracle/json_oracle.json");
    let data = Json::parse_bytes(&std::fs::read(path).unwrap()).unwrap();
    let cases = data.get("cases").unwrap().as_array().unwrap();
    assert!(cases.len() > 600);
    let mut bad = Vec::new();
    for c in cases {
        let input = c.get("in").unwrap().as_str().unwrap();
        let want = c.get("out").unwrap().as_str();
        let got = Json::parse(input).ok().map(|v| v.to_python());
        if got.as_deref() != want {
            bad.push(format!("{input:?}: got {got:?}, want {want:?}"));
        }
    }
    assert!(
        bad.is_empty(),
        "{} mismatches:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

#[test]
fn float_repr_matches_python() {
    let path =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/oracle/json_oracle.json");
    let data = Json::parse_bytes(&std::fs::read(path).unwrap()).unwrap();
    let floats = data.get("floats").unwrap().as_array().unwrap();
    assert!(floats.len() > 2500);
    let mut bad = Vec::new();
    for f in floats {
        let bits = u64::from_str_radix(f.get("bits").unwrap().as_str().unwrap(), 16).unwrap();
        let want = f.get("repr").unwrap().as_str().unwrap();
        let got = ds4_chat::json::python_float_repr(f64::from_bits(bits));
        if got != want {
            bad.push(format!("{bits:016x}: got {got}, want {want}"));
        }
    }
    assert!(
        bad.is_empty(),
        "{} mismatches:\n{}",
        bad.len(),
        bad.join("\n")
    );
}
