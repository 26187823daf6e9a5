//! The `exten` grammar (spec §2.2): `[L]['#'S]['(' LIST ')'][('='|'~')F]`.
//!
//! Decisions where the spec is open:
//! - `L` is digits with an optional leading `+`; `S` is digits only (any
//!   length when written after `#`).
//! - Without `#`, a number of at most 4 digits is short, a longer one (or one
//!   with a leading `+`) is long.
//! - `F` is a number (digits, optional leading `+`), not a client name: the
//!   spec defines it as something the client itself could dial.
//! - LIST items are `N` or `A-B` (A ≤ B), separated by commas, whitespace
//!   around items allowed; positions start at 1, at most [`MAX_POSITION`];
//!   a position listed twice is an error. Whether the positions exist in the
//!   group is checked by the config (it needs the group).
//! - Whitespace around the parts is allowed (`1001 (2) = 123`), not inside a
//!   number.

use proto::Forwarding;

use super::numbers::{all_digits, is_number, is_short_number, NUMBER_RULE};

/// The largest hunting position accepted by the parser.
pub const MAX_POSITION: usize = 9999;

/// Parsed `exten` of a user client.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Exten {
    pub long: Option<String>,
    pub short: Option<String>,
    /// 1-based positions in the client's group, in list order.
    pub hunt: Vec<usize>,
    /// `=F` ([`Forwarding::Always`]), `~F` ([`Forwarding::Unavailable`]) or
    /// neither ([`Forwarding::None`]).
    pub forward: Forwarding,
}

impl Exten {
    /// Parse an exten value; the error is a message without line number.
    pub fn parse(value: &str) -> Result<Exten, String> {
        let value = value.trim();
        let mut exten = Exten::default();

        let head = match value.find(['=', '~']) {
            Some(i) => {
                let sign = char::from(value.as_bytes()[i]);
                let target = value[i + 1..].trim();
                if target.is_empty() {
                    return Err(format!("missing forwarding number after '{sign}'"));
                }
                if !is_number(target) {
                    return Err(format!(
                        "forwarding target '{}' is not a number ({NUMBER_RULE})",
                        proto::shown(target)
                    ));
                }
                exten.forward = if sign == '=' {
                    Forwarding::always(target)
                } else {
                    Forwarding::unavailable(target)
                };
                value[..i].trim()
            }
            None => value,
        };

        let numbers = match head.find('(') {
            Some(i) => {
                let rest = &head[i + 1..];
                let Some(close) = rest.find(')') else {
                    return Err("missing ')' after the hunting list".to_string());
                };
                if !rest[close + 1..].trim().is_empty() {
                    return Err(format!(
                        "unexpected '{}' after the hunting list",
                        rest[close + 1..].trim()
                    ));
                }
                exten.hunt = parse_list(&rest[..close])?;
                head[..i].trim()
            }
            None if head.contains(')') => return Err("')' without '('".to_string()),
            None => head,
        };

        match numbers.split_once('#') {
            Some((long, short)) => {
                let (long, short) = (long.trim(), short.trim());
                if short.contains('#') {
                    return Err("more than one '#'".to_string());
                }
                if !long.is_empty() {
                    if !is_number(long) {
                        return Err(format!(
                            "long number '{}' is not a number ({NUMBER_RULE})",
                            proto::shown(long)
                        ));
                    }
                    exten.long = Some(long.to_string());
                }
                if short.is_empty() {
                    return Err("missing short number after '#'".to_string());
                }
                if !is_short_number(short) {
                    return Err(format!(
                        "short number '{}' is not 1 to 32 digits",
                        proto::shown(short)
                    ));
                }
                exten.short = Some(short.to_string());
            }
            None if numbers.is_empty() => {}
            None => {
                if !is_number(numbers) {
                    return Err(format!(
                        "'{}' is not a number ({NUMBER_RULE})",
                        proto::shown(numbers)
                    ));
                }
                if numbers.starts_with('+') || numbers.len() > 4 {
                    exten.long = Some(numbers.to_string());
                } else {
                    exten.short = Some(numbers.to_string());
                }
            }
        }
        Ok(exten)
    }
}

/// `2`, `2,4`, `3-5`, combinations.
fn parse_list(list: &str) -> Result<Vec<usize>, String> {
    if list.trim().is_empty() {
        return Err("empty hunting list '()'".to_string());
    }
    let mut out: Vec<usize> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for item in list.split(',') {
        let item = item.trim();
        if item.is_empty() {
            return Err(format!("empty item in hunting list '({list})'"));
        }
        let (from, to) = match item.split_once('-') {
            Some((a, b)) => {
                let (from, to) = (position(a.trim())?, position(b.trim())?);
                if from > to {
                    return Err(format!(
                        "bad range '{item}' in hunting list (start after end)"
                    ));
                }
                (from, to)
            }
            None => {
                let p = position(item)?;
                (p, p)
            }
        };
        for p in from..=to {
            if !seen.insert(p) {
                return Err(format!("position {p} listed twice in hunting list"));
            }
            out.push(p);
        }
    }
    Ok(out)
}

fn position(s: &str) -> Result<usize, String> {
    if !all_digits(s) {
        return Err(format!(
            "bad hunting position '{s}' (expected a number or a range like 3-5)"
        ));
    }
    match s.parse::<usize>() {
        Ok(0) => Err("hunting positions start at 1".to_string()),
        Ok(p) if p <= MAX_POSITION => Ok(p),
        _ => Err(format!("hunting position {s} is too large")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(v: &str) -> Exten {
        Exten::parse(v).unwrap_or_else(|e| panic!("{v}: {e}"))
    }
    fn e(v: &str) -> String {
        Exten::parse(v).expect_err(v)
    }
    fn s(v: &str) -> Option<String> {
        Some(v.to_string())
    }

    #[test]
    fn empty_is_nothing() {
        assert_eq!(p(""), Exten::default());
        assert_eq!(p("   "), Exten::default());
    }

    #[test]
    fn bare_number_short_or_long() {
        assert_eq!(p("1").short, s("1"));
        assert_eq!(p("1001").short, s("1001"));
        assert_eq!(p("1001").long, None);
        assert_eq!(p("10011").long, s("10011"));
        assert_eq!(p("10011").short, None);
        assert_eq!(p("4999876543").long, s("4999876543"));
        assert_eq!(p("+7").long, s("+7"), "a + number is always long");
        assert_eq!(p("0001").short, s("0001"));
    }

    #[test]
    fn long_and_short() {
        let x = p("4999876543#1002");
        assert_eq!((x.long, x.short), (s("4999876543"), s("1002")));
        let x = p("#1002");
        assert_eq!((x.long, x.short), (None, s("1002")));
        let x = p("#123456");
        assert_eq!(x.short, s("123456"), "after # any length is short");
        let x = p("12#3");
        assert_eq!(
            (x.long, x.short),
            (s("12"), s("3")),
            "before # any length is long"
        );
        let x = p("+74951234567#12");
        assert_eq!(x.long, s("+74951234567"));
    }

    #[test]
    fn full_grammar() {
        let x = p("4999876543#1002(2,4)=4991234567");
        assert_eq!(x.long, s("4999876543"));
        assert_eq!(x.short, s("1002"));
        assert_eq!(x.hunt, vec![2, 4]);
        assert_eq!(x.forward, Forwarding::always("4991234567"));
        let x = p("1001(3-5)~+44123");
        assert_eq!(x.hunt, vec![3, 4, 5]);
        assert_eq!(x.forward, Forwarding::unavailable("+44123"));
        let x = p(" 1001 ( 2 , 4 - 5 ) = 123 ");
        assert_eq!(x.short, s("1001"));
        assert_eq!(x.hunt, vec![2, 4, 5]);
        assert_eq!(x.forward, Forwarding::always("123"));
    }

    #[test]
    fn parts_alone() {
        assert_eq!(p("(2)").hunt, vec![2]);
        assert_eq!(p("(2)").short, None);
        assert_eq!(p("=123").forward, Forwarding::always("123"));
        assert_eq!(p("~123").forward, Forwarding::unavailable("123"));
        assert_eq!(p("1001(2)").hunt, vec![2]);
        assert_eq!(p("(1,3,2)").hunt, vec![1, 3, 2], "list order is kept");
        assert_eq!(p("(4,1-2)").hunt, vec![4, 1, 2]);
        assert_eq!(p("(2-2)").hunt, vec![2]);
    }

    #[test]
    fn forward_errors() {
        assert_eq!(e("1001="), "missing forwarding number after '='");
        assert_eq!(e("1001~"), "missing forwarding number after '~'");
        assert_eq!(
            e("1001=bar"),
            "forwarding target 'bar' is not a number (1 to 32 digits, optionally after a leading '+')"
        );
        assert!(e("1001=12=3").starts_with("forwarding target '12=3'"));
        assert!(e("1001=12~3").starts_with("forwarding target '12~3'"));
        assert!(e("=12(2)").starts_with("forwarding target '12(2)'"));
        assert!(e("=*72").starts_with("forwarding target '*72'"));
    }

    #[test]
    fn number_errors() {
        let rule = super::NUMBER_RULE;
        assert_eq!(e("abc"), format!("'abc' is not a number ({rule})"));
        assert_eq!(e("10 01"), format!("'10 01' is not a number ({rule})"));
        assert_eq!(e("+"), format!("'+' is not a number ({rule})"));
        let long = "1".repeat(33);
        assert_eq!(e(&long), format!("'{long}' is not a number ({rule})"));
        assert_eq!(
            e(&format!("{long}#1")),
            format!("long number '{long}' is not a number ({rule})")
        );
        assert_eq!(
            e(&format!("1#{long}")),
            format!("short number '{long}' is not 1 to 32 digits")
        );
        assert_eq!(
            e(&format!("1=+{long}")),
            format!("forwarding target '+{long}' is not a number ({rule})")
        );
        assert_eq!(
            e(&"1".repeat(100_000)),
            format!(
                "'{}... (100000 characters)' is not a number ({rule})",
                "1".repeat(32)
            )
        );
        // 32 digits are a number.
        assert!(Exten::parse(&format!("{}#1=+{}", "7".repeat(32), "8".repeat(32))).is_ok());
        assert_eq!(e("1234#"), "missing short number after '#'");
        assert_eq!(e("#"), "missing short number after '#'");
        assert_eq!(e("1#2#3"), "more than one '#'");
        assert_eq!(
            e("12a#3"),
            format!("long number '12a' is not a number ({rule})")
        );
        assert_eq!(e("123#+4"), "short number '+4' is not 1 to 32 digits");
        assert_eq!(e("123#4x"), "short number '4x' is not 1 to 32 digits");
    }

    #[test]
    fn list_errors() {
        assert_eq!(e("1001(2"), "missing ')' after the hunting list");
        assert_eq!(e("1001)"), "')' without '('");
        assert_eq!(e("1001(2)3"), "unexpected '3' after the hunting list");
        assert_eq!(e("1001()"), "empty hunting list '()'");
        assert_eq!(e("1001(2,)"), "empty item in hunting list '(2,)'");
        assert_eq!(e("1001(0)"), "hunting positions start at 1");
        assert_eq!(
            e("1001(5-3)"),
            "bad range '5-3' in hunting list (start after end)"
        );
        assert_eq!(e("1001(2,2)"), "position 2 listed twice in hunting list");
        assert_eq!(e("1001(2-4,3)"), "position 3 listed twice in hunting list");
        assert_eq!(
            e("1001(x)"),
            "bad hunting position 'x' (expected a number or a range like 3-5)"
        );
        assert_eq!(
            e("1001(-2)"),
            "bad hunting position '' (expected a number or a range like 3-5)"
        );
        assert_eq!(e("1001(10000)"), "hunting position 10000 is too large");
        assert_eq!(
            e("1001(1-99999999999999999999999)"),
            "hunting position 99999999999999999999999 is too large"
        );
        assert_eq!(e("1001(2)(3)"), "unexpected '(3)' after the hunting list");
    }
}
