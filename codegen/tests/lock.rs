//! The compatibility lock: every incompatible edit is refused at its exact line and column, the
//! compatible ones pass, `reserved` tags make a removal safe and can never be reused, and a
//! refused schema writes nothing (not the crate, not the lock) unless the break is accepted.

use std::fs;
use std::path::Path;

use codegen::lock::Lock;

/// The schema as it was locked; each case edits one line of it.
const LOCKED: &str = r#"service: Shop
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
  - { name: Full, tag: 2 }
operations:
  - name: get_item
    tag: 1
    kind: query
    params:
      - { name: item_id, type: u64, tag: 1 }
    returns: Item
    errors: [NotFound]
  - name: put_item
    tag: 2
    kind: command
    params:
      - { name: item, type: Item, tag: 1 }
      - { name: note, type: string, tag: 2 }
    errors: [Full]
"#;

fn lock() -> Lock {
    Lock::of(&codegen::parse(Path::new("shop.yaml"), LOCKED).expect("the locked schema is valid"))
}

fn with(from: &str, to: &str) -> String {
    assert!(LOCKED.contains(from), "fixture does not contain {from:?}");
    LOCKED.replacen(from, to, 1)
}

/// The `line:col: code` of every problem `schema` has against the lock (empty: compatible).
fn problems(schema: &str) -> Vec<String> {
    problems_against(&lock(), schema)
}

fn problems_against(lock: &Lock, schema: &str) -> Vec<String> {
    match codegen::check_lock(Path::new("shop.yaml"), schema, lock) {
        Ok(_) => Vec::new(),
        Err(d) => d
            .items
            .iter()
            .map(|i| format!("{}: {}", i.pos, i.code))
            .collect(),
    }
}

#[test]
fn the_locked_schema_and_compatible_additions_pass() {
    assert_eq!(problems(LOCKED), Vec::<String>::new());
    let grown =
        format!("{LOCKED}  - name: count_items\n    tag: 3\n    kind: query\n    returns: u64\n");
    let grown = grown.replacen(
        "      - { name: note, type: string, tag: 2 }\n",
        "      - { name: note, type: string, tag: 2 }\n      \
             - { name: copies, type: u32, tag: 3, default: 1 }\n      \
             - { name: label, type: option<string>, tag: 4 }\n",
        1,
    );
    assert_eq!(problems(&grown), Vec::<String>::new());
}

/// An enum a command carries takes no new variant: the version gate does not see values, so a
/// command using it could reach a replica of the old build, which would stop on it. An enum
/// only answered with may grow.
#[test]
fn a_new_variant_of_an_enum_that_commands_carry_is_refused() {
    let schema = with(
        "      - { name: green, tag: 2 }\n",
        "      - { name: green, tag: 2 }\n      - { name: blue, tag: 3 }\n",
    );
    assert_eq!(problems(&schema), ["7:17: lock::added_variant"]);
    let locked = "service: Stats
types:
  - name: Level
    variants:
      - { name: low, tag: 1 }
operations:
  - name: level
    tag: 1
    kind: query
    returns: Level
";
    let lock = Lock::of(&codegen::parse(Path::new("shop.yaml"), locked).expect("valid"));
    let grown = locked.replacen(
        "tag: 1 }\n",
        "tag: 1 }\n      - { name: high, tag: 2 }\n",
        1,
    );
    assert_eq!(problems_against(&lock, &grown), Vec::<String>::new());
}

#[test]
fn a_changed_tag_is_refused_at_the_tag() {
    assert_eq!(
        problems(&with(
            "    tag: 2\n    kind: command",
            "    tag: 7\n    kind: command"
        )),
        ["23:10: lock::changed_tag"]
    );
    assert_eq!(
        problems(&with(
            "{ name: color, type: Color, tag: 2 }",
            "{ name: color, type: Color, tag: 3 }"
        )),
        ["10:42: lock::changed_tag"]
    );
    assert_eq!(
        problems(&with("{ name: green, tag: 2 }", "{ name: green, tag: 5 }")),
        ["6:29: lock::changed_tag"]
    );
    assert_eq!(
        problems(&with("{ name: Full, tag: 2 }", "{ name: Full, tag: 3 }")),
        ["13:24: lock::changed_tag"]
    );
}

#[test]
fn a_changed_type_or_kind_is_refused_at_it() {
    assert_eq!(
        problems(&with(
            "{ name: item_id, type: u64, tag: 1 }\n    returns",
            "{ name: item_id, type: u32, tag: 1 }\n    returns"
        )),
        ["19:32: lock::changed_type"]
    );
    assert_eq!(
        problems(&with(
            "{ name: item_id, type: u64, tag: 1 }\n      - { name: color",
            "{ name: item_id, type: string, tag: 1 }\n      - { name: color"
        )),
        ["9:32: lock::changed_type"]
    );
    assert_eq!(
        problems(&with("    returns: Item", "    returns: list<Item>")),
        ["20:14: lock::changed_type"]
    );
    assert_eq!(
        problems(&with("    kind: command", "    kind: query")),
        ["24:11: lock::changed_kind"]
    );
}

#[test]
fn a_removal_is_refused_unless_its_tag_is_reserved() {
    // A removed parameter: at its operation's name; reserved, it passes.
    let without_note = with("      - { name: note, type: string, tag: 2 }\n", "");
    assert_eq!(problems(&without_note), ["22:11: lock::removed"]);
    let reserved = without_note.replacen(
        "    errors: [Full]\n",
        "    errors: [Full]\n    reserved: [2]\n",
        1,
    );
    assert_eq!(problems(&reserved), Vec::<String>::new());

    // A removed variant: at its type's name.
    assert_eq!(
        problems(&with("      - { name: green, tag: 2 }\n", "")),
        ["3:11: lock::removed"]
    );
    // A removed operation or error: at the service's name; reserved, they pass.
    let start = LOCKED.find("  - name: put_item").expect("put_item");
    let without_put = LOCKED[..start].replacen("  - { name: Full, tag: 2 }\n", "", 1);
    assert_eq!(
        problems(&without_put),
        ["1:10: lock::removed", "1:10: lock::removed"]
    );
    let reserved = format!("{without_put}reserved:\n  operations: [2]\n  errors: [2]\n");
    assert_eq!(problems(&reserved), Vec::<String>::new());
}

#[test]
fn a_reserved_tag_cannot_be_reused() {
    let schema = with(
        "    errors: [Full]\n",
        "    errors: [Full]\n    reserved: [2]\n",
    );
    let err = codegen::parse(Path::new("shop.yaml"), &schema).expect_err("reuse refused");
    let found: Vec<String> = err
        .items
        .iter()
        .map(|i| format!("{}: {}", i.pos, i.code))
        .collect();
    assert_eq!(found, ["27:42: schema::reserved_tag"]);
}

#[test]
fn a_new_required_parameter_of_an_existing_operation_is_refused() {
    let schema = with(
        "      - { name: item_id, type: u64, tag: 1 }\n    returns",
        "      - { name: item_id, type: u64, tag: 1 }\n      - { name: shelf, type: u32, tag: 2 }\n    returns",
    );
    assert_eq!(problems(&schema), ["20:17: lock::required_param"]);
}

/// A struct a command carries takes no new field, not even an optional one: the log's entries
/// lack it, and a replica of the old build would drop it.
#[test]
fn a_new_field_of_a_struct_that_commands_carry_is_refused() {
    let schema = with(
        "      - { name: color, type: Color, tag: 2 }\n",
        "      - { name: color, type: Color, tag: 2 }\n      - { name: label, type: option<string>, tag: 3 }\n",
    );
    assert_eq!(problems(&schema), ["11:17: lock::added_field"]);
}

/// A struct only answered with may grow by optional fields, not by required ones.
#[test]
fn a_new_field_of_a_struct_only_answered_with_must_be_optional() {
    let locked = "service: Stats
types:
  - name: Counts
    fields:
      - { name: total, type: u64, tag: 1 }
operations:
  - name: counts
    tag: 1
    kind: query
    returns: Counts
";
    let lock = Lock::of(&codegen::parse(Path::new("shop.yaml"), locked).expect("valid"));
    let grown = |field: &str| {
        locked.replacen(
            "tag: 1 }\n",
            &format!("tag: 1 }}\n      - {{ name: largest, type: {field}, tag: 2 }}\n"),
            1,
        )
    };
    assert_eq!(
        problems_against(&lock, &grown("option<u64>")),
        Vec::<String>::new()
    );
    assert_eq!(
        problems_against(&lock, &grown("u64")),
        ["6:17: lock::required_field"]
    );
}

/// Through the generator: a break writes nothing; accepted, the crate and the lock are written
/// and the break is listed.
#[test]
fn a_refused_schema_writes_nothing_and_an_accepted_break_rewrites_the_lock() {
    let dir = tempfile::tempdir().expect("temp dir");
    let schema = dir.path().join("shop.yaml");
    let lock_file = dir.path().join("shop.lock.json");
    let out = dir.path().join("generated");
    fs::write(&schema, LOCKED).expect("schema");
    let generator = || {
        codegen::Generator::new(&schema, &out)
            .runtime(codegen::RuntimeDep::Path("../runtime".into()))
            .lock(&lock_file)
    };
    generator()
        .generate()
        .expect("first generation writes the lock");
    let locked = fs::read_to_string(&lock_file).expect("lock written");
    assert_eq!(locked, lock().to_json());

    fs::write(&schema, with("    kind: command", "    kind: query")).expect("edit");
    let lib_before = fs::read_to_string(out.join("src/lib.rs")).expect("lib.rs");
    match generator().generate() {
        Err(codegen::Error::Schema(d)) => {
            assert_eq!(d.items.len(), 1, "{d}");
            assert!(d.render().contains("--accept-breaking"), "{d}");
        }
        other => panic!("expected the break to be refused, got {other:?}"),
    }
    assert_eq!(fs::read_to_string(&lock_file).expect("lock"), locked);
    assert_eq!(
        fs::read_to_string(out.join("src/lib.rs")).expect("lib.rs"),
        lib_before
    );

    let rendered = generator()
        .accept_breaking(true)
        .generate()
        .expect("accepted");
    assert_eq!(rendered.accepted.len(), 1, "{:?}", rendered.accepted);
    assert!(rendered.accepted[0].contains("lock::changed_kind"));
    let relocked = Lock::from_json(&fs::read_to_string(&lock_file).expect("lock")).expect("parse");
    assert_eq!(relocked.operations["put_item"].kind, "query");
}

/// `deprecated: true` on an operation or a parameter shows in every generated layer, and the
/// lock does not mind it.
#[test]
fn deprecated_shows_in_every_layer_and_is_compatible() {
    let schema = with(
        "  - name: put_item\n    tag: 2\n    kind: command\n",
        "  - name: put_item\n    tag: 2\n    kind: command\n    deprecated: true\n",
    )
    .replacen(
        "{ name: note, type: string, tag: 2 }",
        "{ name: note, type: string, tag: 2, deprecated: true }",
        1,
    );
    assert_eq!(problems(&schema), Vec::<String>::new());
    let api = codegen::parse(Path::new("shop.yaml"), &schema).expect("valid");
    let files = codegen::render(&api, "shop.yaml").expect("rendered");
    let file = |path: &str| {
        files
            .iter()
            .find(|f| f.path == path)
            .unwrap_or_else(|| panic!("no {path}"))
            .text
            .clone()
    };
    assert!(file("src/api.rs").contains("#[deprecated(note = \"`put_item` is deprecated"));
    let proto = file("proto/shop.proto");
    assert!(
        proto.contains(
            "rpc PutItem(PutItemRequest) returns (PutItemResponse) { option deprecated = true; }"
        ),
        "{proto}"
    );
    assert!(
        proto.contains("string note = 2 [deprecated = true];"),
        "{proto}"
    );
    let openrpc: serde_json::Value = serde_json::from_str(&file("openrpc.json")).expect("json");
    let method = openrpc["methods"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["name"] == "put_item"))
        .expect("put_item")
        .clone();
    assert_eq!(method["deprecated"], true);
    assert_eq!(method["params"][1]["deprecated"], true);
    assert!(file("API.md").contains("**Deprecated**"));
    assert!(file("src/cli.rs").contains("Deprecated."));
}
