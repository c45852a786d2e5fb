//! SigV4 `Authorization` headers parsed: never a panic, and a parsed one
//! has a well-formed scope.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(header) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(auth) = cove_wire::sigv4::parse_authorization(header) {
        assert!(auth.scope().ends_with("/aws4_request"));
    }
});
