//! Any bytes on any command queue: `Command::parse` never panics, and what it accepts is a
//! command of that queue's type with a printable-ASCII, lower-case email.
#![no_main]

use lastpass_connector::command::{Command, CommandType};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for queue in CommandType::ALL {
        if let Ok(command) = Command::parse(data, queue) {
            assert_eq!(command.command_type(), queue);
            if let Some(email) = command.email() {
                let e = email.as_str();
                assert!(e.bytes().all(|b| b.is_ascii_graphic()), "{e:?}");
                assert_eq!(e, e.to_ascii_lowercase());
            }
        }
    }
});
