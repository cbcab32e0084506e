//! The published contract (`schemas/*.json`, JSON Schema draft 2020-12) against the code: every
//! schema is a valid schema, and each command schema accepts exactly what `Command::parse`
//! accepts on that queue, as far as JSON Schema can express it (the cases are in
//! `fixtures/commands.*.json`). That every event the service emits validates against its schema
//! is checked by the library's unit tests (`src/contract_tests.rs`) and by every event an
//! integration test reads.

use crate::support::schemas;

use lastpass_connector::command::{Command, CommandType, RejectCode};
use serde_json::{Value, json};

const ID: &str = "1b4e28ba-2fa1-11d2-883f-0016d3cca427";
const DRAFT_2020_12: &str = "https://json-schema.org/draft/2020-12/schema";

const COMMAND_SCHEMAS: [&str; 5] = [
    "command.user.provision.json",
    "command.user.suspend.json",
    "command.user.deprovision.json",
    "command.user.reactivate.json",
    "command.users.sync.json",
];
const EVENT_SCHEMAS: [&str; 9] = [
    "event.user.provisioned.json",
    "event.user.suspended.json",
    "event.user.deprovisioned.json",
    "event.user.reactivated.json",
    "event.command.failed.json",
    "event.command.rejected.json",
    "event.user.synced.json",
    "event.users.sync.completed.json",
    "event.command.dry_run.json",
];

// ---------------------------------------------------------------------------------------------
// 1. The schemas themselves.

#[test]
fn every_schema_is_a_valid_draft_2020_12_schema_that_compiles() {
    let docs = schemas::documents();
    for name in COMMAND_SCHEMAS.iter().chain(&EVENT_SCHEMAS) {
        assert!(docs.contains_key(*name), "schemas/{name} is missing");
    }
    for (name, doc) in docs {
        assert_eq!(doc["$schema"], DRAFT_2020_12, "{name}: $schema");
        assert_eq!(
            doc["$id"].as_str(),
            Some(format!("{}{name}", schemas::ID_BASE).as_str()),
            "{name}: $id"
        );
        for key in ["title", "description"] {
            assert!(
                doc[key].as_str().is_some_and(|s| !s.trim().is_empty()),
                "{name}: needs a {key}"
            );
        }
        if let Err(e) = jsonschema::draft202012::meta::validate(doc) {
            panic!("schemas/{name} is not a valid draft 2020-12 schema: {e}");
        }
        if let Err(e) = schemas::compile(doc) {
            panic!("schemas/{name} does not compile: {e}");
        }
    }
    // Compiled once, with the cross-file references resolved offline.
    assert_eq!(schemas::validators().len(), docs.len());
}

#[test]
fn the_examples_in_the_schemas_are_valid() {
    for (name, doc) in schemas::documents() {
        for example in doc["examples"].as_array().into_iter().flatten() {
            schemas::assert_valid(name, example);
            if name.starts_with("event.") {
                assert_eq!(schemas::event_schema_file(example), *name);
                schemas::assert_valid("cloudevent.json", example);
            }
            if let Some(ty) = name
                .strip_prefix("command.")
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(CommandType::parse)
            {
                let body = serde_json::to_vec(example).unwrap();
                Command::parse(&body, ty)
                    .unwrap_or_else(|r| panic!("{name}: example rejected by the parser: {r:?}"));
            }
        }
    }
}

#[test]
fn a_reference_to_an_unknown_file_fails_offline() {
    let schema = json!({
        "$schema": DRAFT_2020_12,
        "$id": format!("{}probe.json", schemas::ID_BASE),
        "$ref": "no-such-file.json"
    });
    assert!(schemas::compile(&schema).is_err());
}

// ---------------------------------------------------------------------------------------------
// 3. The command schemas accept what the parser accepts, and refuse what it refuses.
//
// `too_large` (a body over 64 KiB) and `not_json` (bytes that are not UTF-8 JSON) cannot be
// expressed in JSON Schema, which validates a JSON value, not bytes; they are left out here
// (their rejection events are covered above).
//
// Known places where the schema is looser than the parser, so also left out: calendar validity
// of requested_at (2026-02-30T00:00:00Z matches the pattern), and a key repeated in one object
// (a JSON Schema validator sees the parsed value, in which the last one has already won; the
// parser rejects it with invalid_field).

const QUEUES: [CommandType; 5] = CommandType::ALL;

fn schema_of(q: CommandType) -> String {
    schemas::command_schema_file(q.as_str())
}

/// Valid commands and the queue that accepts them.
fn valid_commands() -> Vec<(Value, CommandType)> {
    schemas::command_fixtures("commands.valid.json")
        .into_iter()
        .map(|c| {
            (
                c.command,
                CommandType::parse(&c.queue).expect("a known queue"),
            )
        })
        .collect()
}

fn invalid_commands() -> Vec<(Value, CommandType, RejectCode)> {
    schemas::command_fixtures("commands.invalid.json")
        .into_iter()
        .map(|c| {
            let code =
                serde_json::from_value(json!(c.code.expect("a code"))).expect("a known code");
            (
                c.command,
                CommandType::parse(&c.queue).expect("a known queue"),
                code,
            )
        })
        .collect()
}

#[test]
fn command_schemas_accept_exactly_what_the_parser_accepts() {
    for q in QUEUES {
        assert!(schemas::documents().contains_key(&schema_of(q)));
    }
    for (cmd, accepted_on) in valid_commands() {
        let body = serde_json::to_vec(&cmd).unwrap();
        for q in QUEUES {
            let parsed = Command::parse(&body, q);
            if q == accepted_on {
                parsed.unwrap_or_else(|r| panic!("{cmd} should parse on {q}: {r:?}"));
                schemas::assert_valid(&schema_of(q), &cmd);
                schemas::assert_valid("command.json", &cmd);
            } else {
                // Any other queue refuses it (wrong_queue), and so does its schema.
                assert!(parsed.is_err(), "{cmd} must not parse on {q}");
                schemas::assert_invalid(&schema_of(q), &cmd);
            }
        }
    }
}

#[test]
fn command_schemas_reject_what_the_parser_rejects() {
    for (cmd, q, code) in invalid_commands() {
        let body = serde_json::to_vec(&cmd).unwrap();
        let rejection = Command::parse(&body, q)
            .expect_err(&format!("{cmd} must be rejected on the {q} queue"));
        assert_eq!(rejection.code, code, "rejection code of {cmd}");
        schemas::assert_invalid(&schema_of(q), &cmd);
        if code == RejectCode::WrongQueue {
            // Valid on its own queue; the other queues are covered by the test above.
            continue;
        }
        // Invalid whatever queue it arrives on, for the parser and the schemas alike.
        for q in QUEUES {
            assert!(
                Command::parse(&body, q).is_err(),
                "{cmd} must not parse on {q}"
            );
            schemas::assert_invalid(&schema_of(q), &cmd);
        }
    }
}

#[test]
fn known_gaps_are_still_rejected_by_the_parser() {
    // Looser in the schema than in the parser (see the comment above `QUEUES`): the parser
    // still rejects these, which is what matters for the service.
    let cmd =
        json!({"command_id": ID, "type": "users.sync", "requested_at": "2026-02-30T00:00:00Z"});
    let body = serde_json::to_vec(&cmd).unwrap();
    assert!(Command::parse(&body, CommandType::Sync).is_err(), "{cmd}");
    let twice = format!(
        r#"{{"command_id": "{ID}", "type": "user.suspend", "type": "user.deprovision", "user": {{"email": "a@b.co"}}}}"#
    );
    let r = Command::parse(twice.as_bytes(), CommandType::Deprovision).unwrap_err();
    assert_eq!(r.code, RejectCode::InvalidField, "{}", r.message);
}
