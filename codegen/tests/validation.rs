//! Every validation class reports the exact file:line:col, and a failed generation leaves the
//! output directory exactly as it was.

use std::fs;
use std::path::Path;

/// A small valid description; each case below breaks one line of it.
const BASE: &str = r#"service: Shop
types:
  - name: Color
    variants:
      - { name: red, tag: 1 }
      - { name: green, tag: 2 }
  - name: Item
    fields:
      - { name: item_id, type: u64, tag: 1 }
      - { name: color, type: Color, tag: 2 }
errors:
  - { name: NotFound, tag: 1 }
operations:
  - name: get_item
    tag: 1
    kind: query
    params:
      - { name: item_id, type: u64, tag: 1 }
      - { name: limit, type: u32, tag: 2, default: 10 }
    returns: Item
    errors: [NotFound]
"#;

/// Runs generation on `schema` into a directory holding a sentinel file and returns the
/// `file:line:col: code: message` lines; asserts that nothing was written.
fn problems(schema: &str) -> Vec<String> {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("bad.yaml");
    fs::write(&file, schema).expect("write schema");
    let out = dir.path().join("generated");
    fs::create_dir_all(out.join("src")).expect("mkdir");
    fs::write(out.join("src/lib.rs"), "// previous output\n").expect("sentinel");
    let before = snapshot(dir.path());
    let err = match codegen::Generator::new(&file, &out).generate() {
        Ok(_) => panic!("expected the schema to be rejected"),
        Err(codegen::Error::Schema(d)) => d,
        Err(e) => panic!("expected a schema error, got {e}"),
    };
    assert_eq!(
        snapshot(dir.path()),
        before,
        "a rejected schema must not change the output"
    );
    // Each rendered problem names the file, has an underline and a hint.
    let rendered = err.render();
    assert_eq!(
        rendered.matches("--> ").count(),
        err.items.len(),
        "{rendered}"
    );
    assert_eq!(
        rendered.matches("= hint: ").count(),
        err.items.len(),
        "{rendered}"
    );
    let prefix = format!("{}:", file.display());
    err.summary()
        .into_iter()
        .map(|l| l.replacen(&prefix, "bad.yaml:", 1))
        .collect()
}

fn snapshot(root: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let text = fs::read_to_string(&path).unwrap_or_default();
                out.push((path.display().to_string(), text));
            }
        }
    }
    out.sort();
    out
}

fn with(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "fixture does not contain {from:?}");
    BASE.replacen(from, to, 1)
}

#[test]
fn base_fixture_is_valid() {
    let api = codegen::parse(Path::new("base.yaml"), BASE).expect("valid");
    assert_eq!(api.operations.len(), 1);
}

#[test]
fn unknown_type() {
    assert_eq!(
        problems(&with("type: Color", "type: Colour")),
        ["bad.yaml:10:30: schema::unknown_type: unknown type `Colour`"]
    );
    // Inside a type expression, the column points at the bad name, not the list.
    assert_eq!(
        problems(&with("returns: Item", "returns: \"list<Iten>\"")),
        ["bad.yaml:20:20: schema::unknown_type: unknown type `Iten`"]
    );
}

#[test]
fn unknown_type_hint_suggests_the_closest_name() {
    let err =
        codegen::parse(Path::new("bad.yaml"), &with("type: Color", "type: Colr")).unwrap_err();
    assert!(
        err.render().contains("did you mean `Color`?"),
        "{}",
        err.render()
    );
}

#[test]
fn a_misspelled_primitive_gets_a_did_you_mean() {
    let err = codegen::parse(
        Path::new("bad.yaml"),
        &with(
            "{ name: item_id, type: u64, tag: 1 }\n      - { name: color",
            "{ name: item_id, type: decmal, tag: 1 }\n      - { name: color",
        ),
    )
    .unwrap_err();
    assert!(
        err.render().contains("did you mean `decimal`?"),
        "{}",
        err.render()
    );
}

#[test]
fn duplicates() {
    assert_eq!(
        problems(&with("name: green, tag: 2", "name: red, tag: 2")),
        ["bad.yaml:6:17: schema::duplicate: duplicate variant `red`"]
    );
    assert_eq!(
        problems(&with(
            "{ name: color, type: Color",
            "{ name: item_id, type: Color"
        )),
        ["bad.yaml:10:17: schema::duplicate: duplicate field `item_id`"]
    );
    let dup_type = BASE.replacen("  - name: Item\n", "  - name: Color\n", 1);
    assert_eq!(
        problems(&dup_type),
        [
            "bad.yaml:7:11: schema::duplicate: duplicate type `Color`",
            "bad.yaml:20:14: schema::unknown_type: unknown type `Item`",
        ]
    );
    let dup_op =
        format!("{BASE}  - name: get_item\n    tag: 2\n    kind: query\n    returns: u64\n");
    assert_eq!(
        problems(&dup_op),
        ["bad.yaml:22:11: schema::duplicate: duplicate operation `get_item`"]
    );
}

#[test]
fn bad_identifier() {
    assert_eq!(
        problems(&with(
            "name: item_id, type: u64",
            "name: item-id, type: u64"
        )),
        ["bad.yaml:9:17: schema::bad_identifier: field name `item-id` is not a valid identifier"]
    );
    assert_eq!(
        problems(&with("name: get_item", "name: getItem")),
        [
            "bad.yaml:14:11: schema::bad_identifier: operation name `getItem` is not a valid identifier"
        ]
    );
    assert_eq!(
        problems(&with("name: Item\n", "name: 9Item\n")),
        [
            "bad.yaml:7:11: schema::bad_identifier: type name `9Item` is not a valid identifier",
            // The reference to the old name is reported too: every problem, not just the first.
            "bad.yaml:20:14: schema::unknown_type: unknown type `Item`",
        ]
    );
}

#[test]
fn rust_keyword() {
    assert_eq!(
        problems(&with("name: color, type", "name: type, type")),
        ["bad.yaml:10:17: schema::keyword: field name `type` is a Rust keyword"]
    );
}

#[test]
fn names_colliding_after_case_conversion() {
    let collide = format!(
        "{BASE}  - name: get_item_v2\n    tag: 2\n    kind: query\n    returns: u64\n  - name: get_item_v_2\n    tag: 3\n    kind: query\n    returns: u64\n"
    );
    assert_eq!(
        problems(&collide),
        [
            "bad.yaml:26:11: schema::case_collision: operation `get_item_v2` and `get_item_v_2` both become `GetItemV2` in generated code"
        ]
    );
}

#[test]
fn reserved_generated_names() {
    assert_eq!(
        problems(
            &with("name: Item\n", "name: ShopCommand\n")
                .replace("type: Item", "type: ShopCommand")
                .replace("returns: Item", "returns: ShopCommand")
        ),
        [
            "bad.yaml:7:11: schema::reserved_name: type name `ShopCommand` is used by the generated code"
        ]
    );
}

#[test]
fn unknown_error_kind() {
    assert_eq!(
        problems(&with("errors: [NotFound]", "errors: [NotFnd]")),
        ["bad.yaml:21:14: schema::unknown_error: unknown error kind `NotFnd`"]
    );
}

#[test]
fn default_that_does_not_fit() {
    assert_eq!(
        problems(&with("default: 10", "default: -1")),
        [
            "bad.yaml:19:52: schema::bad_default: default `-1` of `limit` does not fit its type `u32`"
        ]
    );
    assert_eq!(
        problems(&with("default: 10", "default: \"ten\"")),
        [
            "bad.yaml:19:53: schema::bad_default: default `ten` of `limit` does not fit its type `u32`"
        ]
    );
}

#[test]
fn empty_struct_and_enum() {
    let empty_enum = BASE.replacen(
        "    variants:\n      - { name: red, tag: 1 }\n      - { name: green, tag: 2 }\n",
        "    variants: []\n",
        1,
    );
    assert_eq!(
        problems(&empty_enum.replace("type: Color", "type: u64")),
        ["bad.yaml:3:11: schema::empty_type: enum `Color` has no variants"]
    );
    let empty_struct = BASE.replacen(
        "    fields:\n      - { name: item_id, type: u64, tag: 1 }\n      - { name: color, type: Color, tag: 2 }\n",
        "    fields: []\n",
        1,
    );
    assert_eq!(
        problems(&empty_struct),
        ["bad.yaml:7:11: schema::empty_type: struct `Item` has no fields"]
    );
}

#[test]
fn tags_missing_duplicated_or_out_of_range() {
    assert_eq!(
        problems(&with(
            "{ name: color, type: Color, tag: 2 }",
            "{ name: color, type: Color }"
        )),
        ["bad.yaml:10:17: schema::missing_tag: field `color` has no tag"]
    );
    assert_eq!(
        problems(&with(
            "{ name: color, type: Color, tag: 2 }",
            "{ name: color, type: Color, tag: 1 }"
        )),
        ["bad.yaml:10:42: schema::duplicate_tag: tag 1 of field `color` is already used"]
    );
    assert_eq!(
        problems(&with(
            "{ name: color, type: Color, tag: 2 }",
            "{ name: color, type: Color, tag: 19001 }"
        )),
        ["bad.yaml:10:42: schema::bad_tag: tag 19001 of field `color` is out of range"]
    );
}

#[test]
fn structural_errors_have_positions() {
    assert_eq!(
        problems(&with("    kind: query\n", "    kind: read\n")),
        ["bad.yaml:16:11: schema::syntax: unknown variant `read`, expected one of command, query"]
    );
    assert_eq!(
        problems(&with("    returns: Item\n", "    return: Item\n")),
        [
            "bad.yaml:20:5: schema::syntax: unknown field `return`, expected one of name, tag, kind, doc, params, returns, errors, reserved, deprecated, watch_keys, allow"
        ]
    );
}

#[test]
fn every_problem_is_reported_not_just_the_first() {
    let many = with("type: Color", "type: Colour").replace("errors: [NotFound]", "errors: [Nope]");
    assert_eq!(
        problems(&many),
        [
            "bad.yaml:10:30: schema::unknown_type: unknown type `Colour`",
            "bad.yaml:21:14: schema::unknown_error: unknown error kind `Nope`",
        ]
    );
}

#[test]
fn json_is_accepted_and_means_the_same() {
    let json = r#"{"service": "Shop",
 "types": [
  {"name": "Color", "variants": [{"name": "red", "tag": 1}, {"name": "green", "tag": 2}]},
  {"name": "Item", "fields": [{"name": "item_id", "type": "u64", "tag": 1}, {"name": "color", "type": "Color", "tag": 2}]}],
 "errors": [{"name": "NotFound", "tag": 1}],
 "operations": [{"name": "get_item", "tag": 1, "kind": "query",
   "params": [{"name": "item_id", "type": "u64", "tag": 1}, {"name": "limit", "type": "u32", "tag": 2, "default": 10}],
   "returns": "Item", "errors": ["NotFound"]}]}"#;
    let from_json = codegen::parse(Path::new("shop.json"), json).expect("valid json");
    let from_yaml = codegen::parse(Path::new("shop.yaml"), BASE).expect("valid yaml");
    assert_eq!(from_json, from_yaml);
    let bad = json.replace("\"type\": \"Color\"", "\"type\": \"Colour\"");
    let err = codegen::parse(Path::new("shop.json"), &bad).unwrap_err();
    assert_eq!(
        err.summary(),
        ["shop.json:4:104: schema::unknown_type: unknown type `Colour`"]
    );
}

#[test]
fn nested_containers_are_refused() {
    let nested = with(
        "type: Color, tag: 2 }",
        "type: \"list<list<u64>>\", tag: 2 }",
    );
    let lines = problems(&nested);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with("bad.yaml:10:")
            && lines[0].contains("schema::unsupported_type: `list<list<u64>>` nests a container"),
        "{lines:?}"
    );
}

#[test]
fn type_names_taken_by_grpc_messages_are_refused() {
    let taken = with("name: Item\n", "name: GetItemRequest\n")
        .replace("type: Item", "type: GetItemRequest")
        .replace("returns: Item", "returns: GetItemRequest");
    assert_eq!(
        problems(&taken),
        [
            "bad.yaml:7:11: schema::reserved_name: type name `GetItemRequest` is the gRPC message of operation `get_item`"
        ]
    );
}

#[test]
fn error_tags_whose_jsonrpc_code_is_taken_are_refused() {
    for (tag, code) in [
        (50, -32050),
        (51, -32051),
        (602, -32602),
        (603, -32603),
        (700, -32700),
    ] {
        assert_eq!(
            problems(&with(
                "{ name: NotFound, tag: 1 }",
                &format!("{{ name: NotFound, tag: {tag} }}")
            )),
            [format!(
                "bad.yaml:12:28: schema::reserved_error_code: error `NotFound` would have \
                 JSON-RPC code {code}, which is taken"
            )]
        );
    }
}

#[test]
fn the_taken_jsonrpc_tags_are_the_runtimes_reserved_codes() {
    let mut taken: Vec<i32> = codegen::model::JSONRPC_TAKEN_TAGS
        .iter()
        .map(|&tag| runtime::wire::codes::domain_code(tag))
        .collect();
    let mut reserved = runtime::wire::codes::RESERVED_CODES.to_vec();
    taken.sort_unstable();
    reserved.sort_unstable();
    assert_eq!(taken, reserved);
    for tag in [1, 50, 700, 1 << 20] {
        assert_eq!(
            codegen::model::error_code(tag),
            i64::from(runtime::wire::codes::domain_code(tag)),
            "tag {tag}"
        );
    }
}

#[test]
fn watch_keys_are_checked_where_they_are_written() {
    // Only commands are in the feed.
    assert_eq!(
        problems(&with(
            "    kind: query\n",
            "    kind: query\n    watch_keys: [item_id]\n"
        )),
        ["bad.yaml:17:18: schema::watch_key_on_query: query `get_item` has watch keys"]
    );
    // A key is a parameter, named once, of an integer or string type.
    let command = with(
        "    kind: query\n",
        "    kind: command\n    watch_keys: [item_idd, color, limit, limit]\n",
    )
    .replacen(
        "      - { name: limit, type: u32, tag: 2, default: 10 }\n",
        "      - { name: limit, type: u32, tag: 2, default: 10 }\n      - { name: color, type: Color, tag: 3 }\n",
        1,
    );
    assert_eq!(
        problems(&command),
        [
            "bad.yaml:17:18: schema::unknown_watch_key: `item_idd` is not a parameter of `get_item`",
            "bad.yaml:17:28: schema::bad_watch_key: watch key `color` is a Color; a key is an integer or a string",
            "bad.yaml:17:42: schema::duplicate_watch_key: watch key `limit` is listed twice",
        ]
    );
    let err = codegen::parse(Path::new("bad.yaml"), &command).unwrap_err();
    assert!(
        err.render().contains("did you mean `item_id`?"),
        "{}",
        err.render()
    );
}

#[test]
fn the_change_feeds_names_are_reserved() {
    assert_eq!(
        problems(
            &with("  - name: Item\n", "  - name: ShopEvent\n")
                .replace("type: Item", "type: ShopEvent")
                .replace("returns: Item", "returns: ShopEvent")
        ),
        [
            "bad.yaml:7:11: schema::reserved_name: type name `ShopEvent` is used by the generated code"
        ]
    );
    assert_eq!(
        problems(&with("  - name: get_item\n", "  - name: watch\n")),
        [
            "bad.yaml:14:11: schema::reserved_name: operation name `watch` is the change feed's (`call watch`)"
        ]
    );
}

#[test]
fn roles_are_checked_where_they_are_written() {
    let roles = with(
        "operations:\n",
        "roles:\n  - { name: clerk }\n  - { name: admin }\n  - { name: clerk }\nallow: [clerck]\noperations:\n",
    )
    .replacen("    kind: query\n", "    kind: query\n    allow: [clerk, admin, nobody]\n", 1);
    assert_eq!(
        problems(&roles),
        [
            "bad.yaml:15:13: schema::reserved_name: role `admin` is built in",
            "bad.yaml:16:13: schema::duplicate: duplicate role `clerk`",
            "bad.yaml:17:9: schema::unknown_role: unknown role `clerck`",
            "bad.yaml:22:20: schema::admin_in_allow: `admin` may call every operation already",
            "bad.yaml:22:27: schema::unknown_role: unknown role `nobody`",
        ]
    );
    let err = codegen::parse(Path::new("bad.yaml"), &roles).unwrap_err();
    assert!(
        err.render().contains("did you mean `clerk`?"),
        "{}",
        err.render()
    );
    // Valid: the operation's own list, else the schema's, else `any`; `admin` always.
    let valid = with(
        "operations:\n",
        "roles:\n  - { name: clerk, doc: Counter staff. }\noperations:\n",
    );
    let api = codegen::parse(Path::new("ok.yaml"), &valid).expect("valid");
    assert_eq!(api.operations[0].allow, ["any"]);
    assert_eq!(api.operations[0].allowed(), "any authenticated caller");
    let api = codegen::parse(
        Path::new("ok.yaml"),
        &valid.replacen("operations:\n", "allow: [clerk]\noperations:\n", 1),
    )
    .expect("valid");
    assert_eq!(api.operations[0].allowed(), "clerk, admin");
}
