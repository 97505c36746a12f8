//! Tags are stable: appending an operation and a field never renumbers anything that exists.

use std::path::Path;

fn bank_schema() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schema/bank.yaml");
    std::fs::read_to_string(path).expect("schema/bank.yaml")
}

#[test]
fn appending_an_operation_and_a_field_keeps_every_existing_tag() {
    let original = bank_schema();
    let before = codegen::parse(Path::new("bank.yaml"), &original).expect("bank.yaml is valid");

    // Append a field to the first struct (Customer) and a new operation at the end.
    let field_anchor = "      - { name: update_time, type: datetime, tag: 7 }\n";
    assert!(
        original.contains(field_anchor),
        "Customer's last field moved; update the test"
    );
    let extended = original.replacen(
        field_anchor,
        &format!("{field_anchor}      - {{ name: nickname, type: \"option<string>\", tag: 8 }}\n"),
        1,
    ) + "\n  - name: close_account\n    tag: 15\n    kind: command\n    params:\n      - { name: account_id, type: u64, tag: 1 }\n    returns: decimal\n    errors: [NotFound]\n";
    let after =
        codegen::parse(Path::new("bank.yaml"), &extended).expect("extended schema is valid");

    let old_tags = before.tags();
    let new_tags = after.tags();
    for (path, tag) in &old_tags {
        assert_eq!(new_tags.get(path), Some(tag), "tag of {path} changed");
    }
    let added: Vec<_> = new_tags
        .keys()
        .filter(|k| !old_tags.contains_key(*k))
        .collect();
    assert_eq!(
        added,
        [
            "op:close_account",
            "op:close_account/param:account_id",
            "type:Customer/field:nickname"
        ]
    );

    // The generated command set keeps the old operations' names, tags and kinds.
    let old_files = codegen::render(&before, "bank.yaml").expect("render");
    let new_files = codegen::render(&after, "bank.yaml").expect("render");
    let command = |files: &[codegen::GeneratedFile]| {
        files
            .iter()
            .find(|f| f.path == "src/command.rs")
            .map(|f| f.text.clone())
            .expect("command.rs")
    };
    let (old_cmd, new_cmd) = (command(&old_files), command(&new_files));
    for op in &before.operations {
        let entry = format!("name: \"{}\",\n        tag: {},", op.name, op.tag);
        assert!(old_cmd.contains(&entry), "{entry} not in old output");
        assert!(new_cmd.contains(&entry), "{entry} not in new output");
    }
}

#[test]
fn a_missing_tag_is_refused_with_the_next_free_one() {
    let schema = bank_schema() + "\n  - name: close_account\n    kind: command\n    returns: u64\n";
    let err = codegen::parse(Path::new("bank.yaml"), &schema).unwrap_err();
    let report = err.render();
    assert!(
        report.contains("operation `close_account` has no tag"),
        "{report}"
    );
    assert!(report.contains("add `tag: 15`"), "{report}");
}

#[test]
fn format_schema_is_draft_07_and_referenced_by_bank_yaml() {
    let schema: serde_json::Value =
        serde_json::from_str(&codegen::format_schema()).expect("valid JSON");
    assert_eq!(schema["$schema"], "http://json-schema.org/draft-07/schema#");
    let required = schema["required"].as_array().expect("required list");
    assert!(required.iter().any(|v| v == "service"));
    assert!(schema["properties"]["operations"].is_object());
    let first_line = bank_schema().lines().next().unwrap_or_default().to_string();
    assert_eq!(
        first_line,
        "# yaml-language-server: $schema=./service.schema.json"
    );
}
