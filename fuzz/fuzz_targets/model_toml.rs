//! A model's model.toml: parsing and validation must refuse bad text with a message, never panic.
#![no_main]

use infergate::repository::ModelConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = ModelConfig::parse(text);
    }
});
