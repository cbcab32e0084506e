//! Validation against the published contract in `schemas/` (JSON Schema draft 2020-12).
//!
//! Self-contained, so the library's unit tests include it too (`src/contract_tests.rs`). Every schema file is loaded into one registry
//! under its `$id`, so the relative `$ref`s between files (`defs.json`, `command.json`,
//! `cloudevent.json`) resolve offline; each file is compiled once.

use jsonschema::{Draft, Registry, Validator};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// `type` of every event is this prefix followed by its routing key.
pub const EVENT_TYPE_PREFIX: &str = "io.github.lastpass-connector.";
/// Where the schemas say they live (their `$id`s start with this).
pub const ID_BASE: &str = "https://lastpass-connector.example/schemas/";

pub fn schemas_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas")
}

/// Every `schemas/*.json`, parsed, by file name.
pub fn documents() -> &'static BTreeMap<String, Value> {
    static DOCS: OnceLock<BTreeMap<String, Value>> = OnceLock::new();
    DOCS.get_or_init(|| {
        let dir = schemas_dir();
        let mut docs = BTreeMap::new();
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("directory entry").path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let doc: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
            docs.insert(name, doc);
        }
        assert!(!docs.is_empty(), "no schemas in {}", dir.display());
        docs
    })
}

/// Compiles one schema with every schema file available for `$ref` resolution, offline.
pub fn compile(schema: &Value) -> Result<Validator, String> {
    let docs = documents();
    let mut builder = Registry::new().draft(Draft::Draft202012);
    for (name, doc) in docs {
        let id = doc["$id"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| format!("{ID_BASE}{name}"));
        builder = builder
            .add(id, doc)
            .map_err(|e| format!("registering {name}: {e}"))?;
    }
    let registry = builder.prepare().map_err(|e| format!("registry: {e}"))?;
    jsonschema::options()
        .with_draft(Draft::Draft202012)
        .with_registry(&registry)
        .offline()
        .should_validate_formats(true)
        .build(schema)
        .map_err(|e| e.to_string())
}

/// Every schema file, compiled once.
pub fn validators() -> &'static HashMap<String, Validator> {
    static VALIDATORS: OnceLock<HashMap<String, Validator>> = OnceLock::new();
    VALIDATORS.get_or_init(|| {
        documents()
            .iter()
            .map(|(name, doc)| {
                let v =
                    compile(doc).unwrap_or_else(|e| panic!("schemas/{name} does not compile: {e}"));
                (name.clone(), v)
            })
            .collect()
    })
}

pub fn validator(file: &str) -> &'static Validator {
    validators()
        .get(file)
        .unwrap_or_else(|| panic!("no schema file schemas/{file}"))
}

/// Every validation error of `instance` against `file`, one line each (empty when valid).
pub fn errors(file: &str, instance: &Value) -> Vec<String> {
    validator(file)
        .iter_errors(instance)
        .map(|e| format!("at {}: {e} (schema {})", e.instance_path(), e.schema_path()))
        .collect()
}

/// Panics, listing every error and the instance, unless `instance` is valid against `file`.
pub fn assert_valid(file: &str, instance: &Value) {
    let errs = errors(file, instance);
    assert!(
        errs.is_empty(),
        "not valid against schemas/{file}:\n  {}\n{}",
        errs.join("\n  "),
        serde_json::to_string_pretty(instance).unwrap_or_default()
    );
}

/// Panics unless `instance` is invalid against `file`.
pub fn assert_invalid(file: &str, instance: &Value) {
    assert!(
        !validator(file).is_valid(instance),
        "unexpectedly valid against schemas/{file}:\n{}",
        serde_json::to_string_pretty(instance).unwrap_or_default()
    );
}

/// The schema file of an event: `event.<routing key>.json`, from its `type`.
pub fn event_schema_file(event: &Value) -> String {
    let ty = event["type"]
        .as_str()
        .unwrap_or_else(|| panic!("event without a string type:\n{event:#}"));
    let key = ty
        .strip_prefix(EVENT_TYPE_PREFIX)
        .unwrap_or_else(|| panic!("event type {ty:?} lacks the prefix {EVENT_TYPE_PREFIX}"));
    format!("event.{key}.json")
}

/// Validates an event against the schema of its type; panics with every error and the event.
pub fn assert_event_valid(event: &Value) {
    assert_valid(&event_schema_file(event), event);
    assert_cloudevents_spec_valid(event);
}

/// The CloudEvents specification's own JSON schema (vendored in `tests/it/fixtures/`), which
/// states no draft: it is read as draft-07, the draft its `definitions` belong to.
fn cloudevents_spec() -> &'static Validator {
    static SPEC: OnceLock<Validator> = OnceLock::new();
    SPEC.get_or_init(|| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/it/fixtures/cloudevents-spec.schema.json");
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let doc: Value = serde_json::from_str(&text).expect("the spec schema is JSON");
        jsonschema::options()
            .with_draft(Draft::Draft7)
            .build(&doc)
            .expect("the CloudEvents spec schema compiles")
    })
}

/// Panics unless `event` is valid against the CloudEvents specification's schema.
pub fn assert_cloudevents_spec_valid(event: &Value) {
    let errors: Vec<String> = cloudevents_spec()
        .iter_errors(event)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "not a valid CloudEvent per the specification's schema: {errors:?}\n{event:#}"
    );
}

/// The schema file of a command type (`user.provision` → `command.user.provision.json`).
pub fn command_schema_file(command_type: &str) -> String {
    format!("command.{command_type}.json")
}

/// One case of `tests/it/fixtures/commands.{valid,invalid}.json`.
pub struct CommandCase {
    /// The command as published.
    pub command: Value,
    /// The `type` of the queue it arrives on.
    pub queue: String,
    /// For an invalid command, the rejection code the parser must give.
    pub code: Option<String>,
}

/// The command cases of one fixture file.
pub fn command_fixtures(file: &str) -> Vec<CommandCase> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/it/fixtures")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let cases: Vec<Value> = serde_json::from_str(&text).expect("fixtures are JSON");
    cases
        .into_iter()
        .map(|mut c| CommandCase {
            command: c["command"].take(),
            queue: c["queue"].as_str().expect("queue").to_string(),
            code: c["code"].as_str().map(str::to_string),
        })
        .collect()
}
