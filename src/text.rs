//! Text from outside (signed metadata, D-Bus callers, configuration) that people will read,
//! and errors put into words for them.

/// An error and its sources on one line (`error sending request: connection refused`):
/// reqwest's and tough's own messages stop at the first level, and the useful part (which
/// file, which signature, why a connection failed) is a level or two down. A source whose
/// text is already in the line is left out.
pub fn causes(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = s.source();
    }
    out
}

/// Characters that may not reach a log line, a D-Bus string a settings screen shows, or a
/// terminal: C0/C1 controls (ESC starts terminal escape sequences), the line and paragraph
/// separators, and the bidirectional marks, overrides and isolates that make a text read
/// differently from what it is (U+202E turns "exe.txt" around).
pub fn is_unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}'
                | '\u{200E}'
                | '\u{200F}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2066}'..='\u{2069}'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_characters() {
        for c in [
            '\0', '\u{1b}', '\n', '\u{85}', '\u{2028}', '\u{202e}', '\u{2067}', '\u{200f}',
        ] {
            assert!(is_unsafe_char(c), "{c:?}");
        }
        for c in ['a', 'é', '…', '€', ' ', '\u{2010}', '日'] {
            assert!(!is_unsafe_char(c), "{c:?}");
        }
    }
}
