//! A small analytic model of how many cl100k tokens a piece of SVG path data costs.
//!
//! cl100k (GPT-4's tokenizer) first splits text with a regular expression and then applies
//! byte-pair merges inside each piece. For the alphabet of path data (digits, command letters,
//! `-`, `.`, `,` and spaces) the split is simple and the merges are predictable:
//!
//! * a run of digits is cut into chunks of up to three digits, each chunk is one token
//!   (`"1234"` → `"123"`, `"4"`);
//! * a run of punctuation with an optional leading space is one piece, and the pieces that
//!   occur in path data (`-`, `.`, `-.`, ` -`, ` .`, ` -.`, `,`) are single tokens;
//! * a space directly before a digit is a token of its own;
//! * a run of letters is one piece; single command letters are one token, and `z` followed by
//!   a command letter (`zm`, `zM`) merges into one token.
//!
//! The model is validated against the real tokenizer in the crate's tests.

/// Character classes of the pre-tokenizer, restricted to what path data contains.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Digit,
    Letter,
    Space,
    Punct,
}

fn class(c: u8) -> Class {
    match c {
        b'0'..=b'9' => Class::Digit,
        b'a'..=b'z' | b'A'..=b'Z' => Class::Letter,
        b' ' | b'\t' | b'\n' | b'\r' => Class::Space,
        _ => Class::Punct,
    }
}

/// Estimated number of cl100k tokens of `s`, a piece of SVG path data (or any text made of
/// ASCII digits, letters, spaces and punctuation).
///
/// ```
/// use svgen_core::compact::path_data_tokens;
/// assert_eq!(path_data_tokens("M12 4a4 4 0 0 1 4 4"), 18);
/// assert_eq!(path_data_tokens("-.5"), 2);
/// ```
pub fn path_data_tokens(s: &str) -> usize {
    let b = s.as_bytes();
    let mut i = 0;
    let mut n = 0;
    while i < b.len() {
        match class(b[i]) {
            Class::Digit => {
                let start = i;
                while i < b.len() && class(b[i]) == Class::Digit {
                    i += 1;
                }
                n += (i - start).div_ceil(3);
            }
            Class::Letter => {
                let start = i;
                while i < b.len() && class(b[i]) == Class::Letter {
                    i += 1;
                }
                let run = &b[start..i];
                n += letter_run_tokens(run);
            }
            Class::Space => {
                // A single space followed by punctuation joins that punctuation piece.
                let start = i;
                while i < b.len() && class(b[i]) == Class::Space {
                    i += 1;
                }
                let spaces = i - start;
                if i < b.len() && class(b[i]) == Class::Punct {
                    if spaces > 1 {
                        n += 1;
                    }
                    while i < b.len() && class(b[i]) == Class::Punct {
                        i += 1;
                    }
                    n += 1;
                } else {
                    n += 1;
                }
            }
            Class::Punct => {
                while i < b.len() && class(b[i]) == Class::Punct {
                    i += 1;
                }
                n += 1;
            }
        }
    }
    n
}

/// Estimated number of cl100k tokens of markup (tags, attributes and path data): like
/// [`path_data_tokens`], but a run of letters is one token with the space before it (`" cx"`,
/// `"ellipse"`), as words are in cl100k; in path data such runs are single commands or `zm`.
pub(crate) fn markup_tokens(s: &str) -> usize {
    let b = s.as_bytes();
    let mut i = 0;
    let mut n = 0;
    while i < b.len() {
        match class(b[i]) {
            Class::Digit => {
                let start = i;
                while i < b.len() && class(b[i]) == Class::Digit {
                    i += 1;
                }
                n += (i - start).div_ceil(3);
            }
            Class::Letter => {
                let start = i;
                while i < b.len() && class(b[i]) == Class::Letter {
                    i += 1;
                }
                let run = &b[start..i];
                // Runs starting with `z` are path commands (`zm`); others are words.
                n += if run[0] == b'z' {
                    letter_run_tokens(run)
                } else {
                    1
                };
            }
            Class::Space => {
                let start = i;
                while i < b.len() && class(b[i]) == Class::Space {
                    i += 1;
                }
                let spaces = i - start;
                match b.get(i).map(|c| class(*c)) {
                    // A single space joins the word or punctuation after it.
                    Some(Class::Letter) | Some(Class::Punct) if spaces == 1 => {}
                    _ => n += 1,
                }
            }
            Class::Punct => {
                while i < b.len() && class(b[i]) == Class::Punct {
                    i += 1;
                }
                n += 1;
            }
        }
    }
    n
}

fn letter_run_tokens(run: &[u8]) -> usize {
    match run.len() {
        0 => 0,
        1 => 1,
        _ => {
            // `zm`/`zM` (close then move) are single tokens; other pairs of command letters
            // are counted one token per letter.
            let mut n = 0;
            let mut i = 0;
            while i < run.len() {
                if run[i] == b'z' && i + 1 < run.len() && matches!(run[i + 1], b'm' | b'M') {
                    i += 2;
                } else {
                    i += 1;
                }
                n += 1;
            }
            n
        }
    }
}

/// Whether a space is needed between the previously written byte and the number `num`.
pub(crate) fn needs_separator(prev: Option<u8>, prev_has_dot: bool, num: &str) -> bool {
    let Some(p) = prev else { return false };
    if !p.is_ascii_digit() && p != b'.' {
        // After a command letter (or at the start) no separator is needed.
        return false;
    }
    match num.as_bytes().first() {
        Some(b'-') => false,
        Some(b'.') => !prev_has_dot,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digit_runs_are_cut_in_threes() {
        assert_eq!(path_data_tokens("1"), 1);
        assert_eq!(path_data_tokens("123"), 1);
        assert_eq!(path_data_tokens("1234"), 2);
        assert_eq!(path_data_tokens("1234567"), 3);
    }

    #[test]
    fn separators() {
        assert_eq!(path_data_tokens("1 2"), 3);
        assert_eq!(path_data_tokens("1-2"), 3);
        assert_eq!(path_data_tokens("1 -2"), 3);
        assert_eq!(path_data_tokens("1.5.5"), 5);
        assert_eq!(path_data_tokens("-.5"), 2);
        assert_eq!(path_data_tokens("zm"), 1);
    }

    #[test]
    fn markup_words_are_single_tokens() {
        // <|ellipse| cx|="|12|"| cy|="|17|"/>
        assert_eq!(markup_tokens(r#"<ellipse cx="12" cy="17"/>"#), 10);
        // Path data counts as in the path model.
        assert_eq!(
            markup_tokens("M21 17A9 3 0 113 17zm1 1"),
            path_data_tokens("M21 17A9 3 0 113 17zm1 1")
        );
    }

    #[test]
    fn separator_rules() {
        assert!(!needs_separator(Some(b'l'), false, "4"));
        assert!(needs_separator(Some(b'4'), false, "4"));
        assert!(!needs_separator(Some(b'4'), false, "-4"));
        assert!(needs_separator(Some(b'4'), false, ".4"));
        assert!(!needs_separator(Some(b'4'), true, ".4"));
    }
}
