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

/// `s` as one short line that a settings screen, a log or a terminal may show: terminal
/// escape sequences removed whole (dropping only the ESC would leave `[31m` or a window
/// title's text behind), every other unsafe character ([`is_unsafe_char`]) removed, line
/// breaks and other white space made single spaces, and at most `max` characters — the last
/// one `…` when it was cut. For text a server or another program wrote (an HTTP answer's
/// body, an error that quotes one).
pub fn one_line(s: &str, max: usize) -> String {
    let mut kept = String::with_capacity(s.len().min(4 * max + 4));
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => match chars.next() {
                Some('[') => skip_csi(&mut chars),
                Some(']' | 'P' | 'X' | '^' | '_') => skip_string(&mut chars),
                // ESC, intermediates (0x20–0x2F), one final character.
                Some(' '..='/') => {
                    while chars.next_if(|c| matches!(c, ' '..='/')).is_some() {}
                    chars.next();
                }
                _ => {}
            },
            '\u{9b}' => skip_csi(&mut chars),
            '\u{90}' | '\u{98}' | '\u{9d}' | '\u{9e}' | '\u{9f}' => skip_string(&mut chars),
            c if c.is_whitespace() => kept.push(' '),
            c if is_unsafe_char(c) => {}
            c => kept.push(c),
        }
    }
    let words = kept.split_whitespace().collect::<Vec<_>>().join(" ");
    if words.chars().count() <= max {
        return words;
    }
    let mut cut: String = words.chars().take(max.saturating_sub(1)).collect();
    cut.truncate(cut.trim_end().len());
    if max > 0 {
        cut.push('…');
    }
    cut
}

/// Skips a control sequence's parameters and intermediates (0x20–0x3F) and its final
/// character (0x40–0x7E).
fn skip_csi(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    while chars.next_if(|c| matches!(c, ' '..='?')).is_some() {}
    chars.next_if(|c| matches!(c, '@'..='~'));
}

/// Skips a control string (OSC, DCS, SOS, PM, APC) up to and with its terminator: BEL, ST
/// (`ESC \\` or U+009C), or the end of the text — a terminal would swallow that much too.
fn skip_string(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    while let Some(c) = chars.next() {
        match c {
            '\u{7}' | '\u{9c}' => return,
            '\u{1b}' => {
                chars.next_if_eq(&'\\');
                return;
            }
            _ => {}
        }
    }
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

    #[test]
    fn one_line_removes_escape_sequences_whole_and_bounds_the_length() {
        let cases: &[(&str, &str)] = &[
            ("plain words", "plain words"),
            ("\u{1b}[31mred\u{1b}[0m alert", "red alert"),
            ("\u{1b}[2J\u{1b}[1;1Hcleared", "cleared"),
            ("\u{1b}]0;pwned\u{7}title", "title"),
            (
                "\u{1b}]8;;http://evil\u{1b}\\link\u{1b}]8;;\u{1b}\\ text",
                "link text",
            ),
            ("\u{1b}(Bcharset", "charset"),
            ("\u{9b}31mC1 csi", "C1 csi"),
            ("\u{9d}0;t\u{9c}osc", "osc"),
            ("a\r\nb\tc\u{2028}d", "a b c d"),
            ("  many   spaces\n\n", "many spaces"),
            ("exe.\u{202e}txt\u{0}", "exe.txt"),
            ("trailing \u{1b}", "trailing"),
            ("unterminated \u{1b}]0;title", "unterminated"),
            ("", ""),
        ];
        for (input, want) in cases {
            assert_eq!(one_line(input, 200), *want, "{input:?}");
        }
        let long = "x".repeat(10_000);
        let cut = one_line(&long, 200);
        assert_eq!(cut.chars().count(), 200);
        assert!(cut.ends_with('…'));
        assert_eq!(one_line("abc def", 7), "abc def");
        assert_eq!(one_line("abc defg", 7), "abc de…");
        assert_eq!(
            one_line("abc defg", 5),
            "abc…",
            "no space before the ellipsis"
        );
    }
}
