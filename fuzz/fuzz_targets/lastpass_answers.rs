//! Any bytes as an answer of LastPass to every call the connector makes: the parsers never
//! panic (an answer they cannot read is an error, never a crash).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    lastpass_connector::lastpass::fuzz_answers(data);
});
