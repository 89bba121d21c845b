//! Guest text on the host's console. A guest controls its log bodies,
//! span names and attribute values; printed raw, a newline starts a line
//! that looks like the host's own, an ANSI escape rewrites the terminal, and
//! a bidirectional override reorders what the reader sees. Every console
//! printer passes guest text through [`printable`].

use std::borrow::Cow;
use std::fmt::Write as _;

/// `text` with every character that is not printable text escaped as Rust
/// writes it: `\n`, `\r`, `\t`, `\\u{1b}` for the other C0 controls, DEL and
/// the C1 controls, and the Unicode bidirectional controls (U+061C,
/// U+200E–U+200F, U+202A–U+202E, U+2066–U+2069). A backslash is doubled
/// only when something was escaped, so ordinary text prints unchanged.
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\\' => out.push_str("\\\\"),
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_and_bidi_overrides_are_escaped_and_plain_text_is_not() {
        assert!(matches!(
            printable("order 42 paid: 12.50 € ✓"),
            Cow::Borrowed(_)
        ));
        assert!(matches!(printable(r"C:\path"), Cow::Borrowed(_)));
        assert_eq!(
            printable("ok\n2026-11-30T10:00:00Z INFO polytrace: forged"),
            "ok\\n2026-11-30T10:00:00Z INFO polytrace: forged"
        );
        assert_eq!(
            printable("\u{1b}[2J\u{1b}[31mred"),
            "\\u{1b}[2J\\u{1b}[31mred"
        );
        assert_eq!(printable("a\rb\tc\u{7f}\u{9b}"), "a\\rb\\tc\\u{7f}\\u{9b}");
        assert_eq!(printable("x\u{202e}gnp.exe"), "x\\u{202e}gnp.exe");
        // Once escaping, a backslash is doubled, so `\n` typed by the guest
        // and an escaped newline differ.
        assert_eq!(printable("\\n\n"), "\\\\n\\n");
    }
}
