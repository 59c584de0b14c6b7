//! docs/json.md read as a schema: `--json` is an interface, and every
//! line a real run prints must match it (tests/json_events.rs, and the
//! port-mapping runs of tests/portmap.rs).

use std::collections::BTreeMap;

use serde_json::Value;

/// Field name → type, per event, from docs/json.md (`*`: every event).
pub fn schema() -> BTreeMap<String, BTreeMap<String, String>> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/json.md"))
        .expect("docs/json.md");
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in doc.lines() {
        if let Some(h) = line.strip_prefix("### `") {
            current = Some(h.trim_end_matches('`').to_string());
            continue;
        }
        if line.starts_with("## ") {
            current = None;
        }
        let (Some(ev), Some(row)) = (&current, line.strip_prefix("| `")) else {
            continue;
        };
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let field = cells[0].trim_end_matches('`').to_string();
        let ty = cells[1].to_string();
        let base = ty.strip_suffix(" or null").unwrap_or(&ty);
        assert!(
            ["integer", "number", "string", "boolean", "object"].contains(&base),
            "docs/json.md: {ev}.{field} has unknown type {ty:?}"
        );
        out.entry(ev.clone()).or_default().insert(field, ty);
    }
    for ev in [
        "*",
        "metadata",
        "listening",
        "checking",
        "resuming",
        "state",
        "progress",
        "seeding",
        "port_mapping",
        "error",
        "done",
    ] {
        assert!(out.contains_key(ev), "docs/json.md documents no `{ev}`");
    }
    out
}

fn type_ok(v: &Value, ty: &str) -> bool {
    if let Some(base) = ty.strip_suffix(" or null") {
        return v.is_null() || type_ok(v, base);
    }
    match ty {
        "object" => v.is_object(),
        "integer" => v.is_u64() || v.is_i64(),
        "number" => v.is_number(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        _ => false,
    }
}

/// Checks every line of `stdout`; returns the events, parsed.
pub fn check_lines(
    stdout: &str,
    schema: &BTreeMap<String, BTreeMap<String, String>>,
    run: &str,
) -> Vec<Value> {
    let mut events = Vec::new();
    for line in stdout.lines() {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{run}: not JSON ({e}): {line}"));
        let obj = v
            .as_object()
            .unwrap_or_else(|| panic!("{run}: not an object: {line}"));
        let ev = obj["event"]
            .as_str()
            .unwrap_or_else(|| panic!("{run}: no event name: {line}"));
        let fields = schema
            .get(ev)
            .unwrap_or_else(|| panic!("{run}: event `{ev}` is not in docs/json.md: {line}"));
        let common = &schema["*"];
        for (name, ty) in common.iter().chain(fields.iter()) {
            let got = obj
                .get(name)
                .unwrap_or_else(|| panic!("{run}: {ev} lacks `{name}`: {line}"));
            assert!(type_ok(got, ty), "{run}: {ev}.{name} is not {ty}: {line}");
        }
        for name in obj.keys() {
            assert!(
                common.contains_key(name) || fields.contains_key(name),
                "{run}: {ev}.{name} is not in docs/json.md: {line}"
            );
        }
        assert_eq!(v["version"], 1, "{run}: {line}");
        events.push(v);
    }
    events
}
