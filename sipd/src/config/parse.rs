//! The sip.conf text format: sections, `key=value`, comments, line numbers.
//!
//! This layer knows nothing about what the keys mean: it turns the text into
//! a list of section headers and `key=value` pairs with their line numbers,
//! and reports lines that are neither.
//!
//! - Lines are numbered from 1; `\n` and `\r\n` endings are both accepted, a
//!   UTF-8 byte-order mark at the start is ignored.
//! - `;` starts a comment anywhere in a line; `\;` is a literal `;`. No other
//!   escape exists: any other backslash is kept as it is (so `dialplan=^7\d+$`
//!   needs no doubling), and `\\;` is a backslash followed by a literal `;`.
//! - After the comment is removed the line is trimmed; an empty line is
//!   ignored. A line starting with `[` is a section header and must end with
//!   `]`; the name inside is trimmed. Otherwise the line must contain `=`:
//!   key and value are split at the first `=` and trimmed (the value may
//!   contain more `=`, as `exten=L#S=F` does). Quotes have no meaning here.

use super::ConfigError;

/// One meaningful line of sip.conf.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Item {
    Section {
        line: usize,
        name: String,
    },
    Pair {
        line: usize,
        key: String,
        value: String,
    },
}

/// Split sip.conf text into items; lines that are neither a header nor a
/// `key=value` pair are reported as errors (and skipped).
pub(super) fn lex(text: &str) -> (Vec<Item>, Vec<ConfigError>) {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut items = Vec::new();
    let mut errors = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let content = strip_comment(raw);
        let content = content.trim();
        if content.is_empty() {
            continue;
        }
        if let Some(rest) = content.strip_prefix('[') {
            match rest.strip_suffix(']') {
                Some(name) => items.push(Item::Section {
                    line,
                    name: name.trim().to_string(),
                }),
                None => errors.push(err(
                    line,
                    format!("bad section header '{}': expected [name]", shorten(content)),
                )),
            }
        } else if let Some((key, value)) = content.split_once('=') {
            let key = key.trim();
            if key.is_empty() {
                errors.push(err(
                    line,
                    format!("missing key before '=' in '{}'", shorten(content)),
                ));
            } else {
                items.push(Item::Pair {
                    line,
                    key: key.to_string(),
                    value: value.trim().to_string(),
                });
            }
        } else {
            errors.push(err(
                line,
                format!(
                    "expected [section] or key=value, got '{}'",
                    shorten(content)
                ),
            ));
        }
    }
    (items, errors)
}

/// The line without its comment, with `\;` turned into `;`.
fn strip_comment(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&';') => {
                out.push(';');
                chars.next();
            }
            ';' => break,
            c => out.push(c),
        }
    }
    out
}

fn err(line: usize, message: String) -> ConfigError {
    ConfigError { line, message }
}

/// A line quoted in an error message, cut to a readable length.
pub(super) fn shorten(s: &str) -> String {
    const MAX: usize = 60;
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(MAX).collect();
        out.push('…');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(line: usize, key: &str, value: &str) -> Item {
        Item::Pair {
            line,
            key: key.to_string(),
            value: value.to_string(),
        }
    }
    fn section(line: usize, name: &str) -> Item {
        Item::Section {
            line,
            name: name.to_string(),
        }
    }

    #[test]
    fn comments_and_escapes() {
        assert_eq!(strip_comment("a=b ; c"), "a=b ");
        assert_eq!(strip_comment("; all"), "");
        assert_eq!(strip_comment(r"a=b\;c;d"), "a=b;c");
        assert_eq!(strip_comment(r"a=\;\;"), "a=;;");
        assert_eq!(strip_comment(r"a=^7\d+$"), r"a=^7\d+$");
        assert_eq!(strip_comment(r"a=x\\;y"), r"a=x\;y");
        assert_eq!(strip_comment(r"a=x\"), r"a=x\");
    }

    #[test]
    fn items_with_lines() {
        let text = "; head\n\n[foo]\n  key =  v a l ; c\nexten=1=2\n[ bar ] ; x\r\nk=\r\n";
        let (items, errors) = lex(text);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            items,
            vec![
                section(3, "foo"),
                pair(4, "key", "v a l"),
                pair(5, "exten", "1=2"),
                section(6, "bar"),
                pair(7, "k", ""),
            ]
        );
    }

    #[test]
    fn bom_is_ignored() {
        let (items, errors) = lex("\u{feff}[a]\nk=v");
        assert!(errors.is_empty());
        assert_eq!(items, vec![section(1, "a"), pair(2, "k", "v")]);
    }

    #[test]
    fn bad_lines() {
        let (items, errors) = lex("[a\nfoo\n=x\n[b] c\nk=v");
        assert_eq!(items, vec![pair(5, "k", "v")]);
        let got: Vec<_> = errors
            .iter()
            .map(|e| (e.line, e.message.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (1, "bad section header '[a': expected [name]"),
                (2, "expected [section] or key=value, got 'foo'"),
                (3, "missing key before '=' in '=x'"),
                (4, "bad section header '[b] c': expected [name]"),
            ]
        );
    }

    #[test]
    fn long_lines_are_shortened() {
        let long = "x".repeat(100);
        let (_, errors) = lex(&long);
        assert_eq!(
            errors[0].message,
            format!("expected [section] or key=value, got '{}…'", "x".repeat(60))
        );
    }
}
