//! Label and pattern parsing: never a panic, and what parses prints back
//! to a string that parses to the same value.
#![no_main]

use layerbuild::label::{Label, Pattern};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(l) = Label::parse(s) {
        assert_eq!(Label::parse(&l.to_string()).as_ref(), Ok(&l));
        let _ = l.slug();
    }
    if let Ok(l) = Label::from_key(s) {
        assert_eq!(Label::parse(&l.to_string()).as_ref(), Ok(&l));
    }
    if let Ok(p) = Pattern::parse(s) {
        assert_eq!(Pattern::parse(&p.to_string()).as_ref(), Ok(&p));
    }
});
