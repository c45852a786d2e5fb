//! Any text written by the XML writer's escape parses back as XML text:
//! what an answer echoes can never break its document.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let mut doc = String::from("<a>");
    cove_wire::xml::escape(text, &mut doc);
    doc.push_str("</a>");
    let mut reader = quick_xml::Reader::from_str(&doc);
    loop {
        match reader.read_event() {
            Ok(quick_xml::events::Event::Eof) => break,
            Ok(_) => {}
            Err(e) => panic!("{doc:?} does not parse: {e}"),
        }
    }
});
