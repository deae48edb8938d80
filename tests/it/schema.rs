//! Every VDSM verb Cairn serves, and every parameter it accepts, exists with
//! the same name in VDSM's API schema (Cairn's own verbs, `CAIRN_VERBS`,
//! are documented in docs/api.md). The schema is reference material outside
//! the repository (../shared/reference/vdsm-api.yml); without it the test
//! says so and checks nothing.

use std::collections::HashMap;
use std::path::Path;

/// Parameter names per method, read from the schema's layout: a method is a
/// top-level `Name.verb:` key; its parameters are the `name:` entries of the
/// `params:` list items (`-   description:` ... `name: x`).
fn schema_params(text: &str) -> HashMap<String, Vec<String>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    let mut current: Option<String> = None;
    let mut in_params = false;
    for line in text.lines() {
        if !line.starts_with(' ') && line.ends_with(':') && line.contains('.') {
            current = Some(line.trim_end_matches(':').to_string());
            out.entry(current.clone().unwrap()).or_default();
            in_params = false;
            continue;
        }
        if !line.starts_with(' ') && !line.is_empty() {
            current = None;
        }
        let Some(method) = &current else { continue };
        if line == "    params:" {
            in_params = true;
        } else if line.starts_with("    ")
            && !line.starts_with("     ")
            && !line.starts_with("    -")
        {
            in_params = false;
        } else if in_params && line.starts_with("      ") {
            // List items' keys are indented by 6 (`    - key`) or 8
            // (`    -   key`) under `params:`.
            if let Some(name) = line.trim_start().strip_prefix("name: ") {
                out.get_mut(method).unwrap().push(name.to_string());
            }
        }
    }
    out
}

#[test]
fn verbs_and_parameters_match_vdsm_schema() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/reference/vdsm-api.yml");
    let Ok(text) = std::fs::read_to_string(&path) else {
        eprintln!(
            "SKIP: {} is not present; verb names are not checked against VDSM's schema",
            path.display()
        );
        return;
    };
    let schema = schema_params(&text);
    assert!(schema.len() > 100, "schema parsed badly");
    for verb in cairn::api::verbs::VERBS {
        let params = schema
            .get(verb.name)
            .unwrap_or_else(|| panic!("{} is not in VDSM's schema", verb.name));
        for p in verb.params {
            assert!(
                params.iter().any(|s| s == p),
                "{}: parameter {p} is not in the schema ({params:?})",
                verb.name
            );
        }
    }
}
