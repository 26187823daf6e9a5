//! The import graph inside `sip/` has no cycles: every file uses only files
//! listed before it in the layer list of the `sip/mod.rs` doc comment.
//!
//! A reference is a `super::x` in a file's own code (not in its inline
//! `#[cfg(test)] mod tests`, where `super` is the file itself) or a
//! `crate::sip::x` anywhere in it; `x` is the first path segment, or the
//! first segment of each item of a `{…}` group.

/// The doc comment with the layer list, and the `mod` declarations.
const MOD_RS: &str = include_str!("../mod.rs");

/// Every file of the module besides `mod.rs` and `tests/`.
const SOURCES: &[(&str, &str)] = &[
    ("auth", include_str!("../auth.rs")),
    ("build", include_str!("../build.rs")),
    ("edit", include_str!("../edit.rs")),
    ("error", include_str!("../error.rs")),
    ("header", include_str!("../header.rs")),
    ("limits", include_str!("../limits.rs")),
    ("message", include_str!("../message.rs")),
    ("method", include_str!("../method.rs")),
    ("name", include_str!("../name.rs")),
    ("params", include_str!("../params.rs")),
    ("parse", include_str!("../parse.rs")),
    ("uri", include_str!("../uri.rs")),
];

/// The layer list of the doc comment: lines `//! N. \`name\`…`, in order.
fn documented_order(mod_rs: &str) -> Vec<&str> {
    mod_rs
        .lines()
        .filter_map(|l| l.strip_prefix("//! "))
        .filter_map(|l| {
            let (num, rest) = l.split_once(". `")?;
            if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            rest.split_once('`').map(|(name, _)| name)
        })
        .collect()
}

/// The modules `mod.rs` declares (`mod x;`, `pub mod x;`), without `tests`.
fn declared_modules(mod_rs: &str) -> Vec<&str> {
    let mut v: Vec<&str> = mod_rs
        .lines()
        .map(str::trim)
        .filter_map(|l| l.strip_prefix("pub ").unwrap_or(l).strip_prefix("mod "))
        .filter_map(|l| l.strip_suffix(';'))
        .filter(|&m| m != "tests")
        .collect();
    v.sort_unstable();
    v
}

/// Drop whole-line comments (doc comments included).
fn code(src: &str) -> String {
    src.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The first segment of each path starting right after `prefix` in `src`
/// (where `prefix` is not itself the tail of a longer path). `*`, `self`
/// and the like are returned as written so that the caller rejects them.
fn segments_after(src: &str, prefix: &str) -> Vec<String> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(off) = src.get(from..).and_then(|s| s.find(prefix)) {
        let at = from + off;
        from = at + prefix.len();
        let before = at.checked_sub(1).and_then(|i| b.get(i)).copied();
        if before.is_some_and(|c| is_ident_byte(c) || c == b':') {
            continue;
        }
        let rest = src.get(from..).unwrap_or("").trim_start();
        if let Some(group) = rest.strip_prefix('{') {
            // Items of the group, split at commas outside nested braces.
            let mut depth = 0usize;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.extend(first_segment(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            out.extend(first_segment(&item));
        } else {
            out.extend(first_segment(rest));
        }
    }
    out
}

/// `message` for `message::Message`, `*` for `*`; `None` for an empty item.
fn first_segment(item: &str) -> Option<String> {
    let item = item.trim_start();
    if item.starts_with('*') {
        return Some("*".into());
    }
    let end = item
        .bytes()
        .position(|c| !is_ident_byte(c))
        .unwrap_or(item.len());
    let seg = item.get(..end).unwrap_or("");
    (!seg.is_empty()).then(|| seg.to_string())
}

/// The sip modules (or other names) one file refers to.
fn references(src: &str) -> Vec<String> {
    let own = match src.find("\n#[cfg(test)]\nmod ") {
        Some(i) => src.get(..i).unwrap_or(src),
        None => src,
    };
    let mut refs = segments_after(&code(own), "super::");
    refs.extend(segments_after(&code(src), "crate::sip::"));
    refs
}

/// Every reference that does not go to a module lower in `order`.
fn violations(sources: &[(&str, &str)], order: &[&str]) -> Vec<String> {
    let rank = |m: &str| order.iter().position(|&o| o == m);
    let mut out = Vec::new();
    for &(file, src) in sources {
        let Some(own) = rank(file) else {
            out.push(format!("{file}.rs is not in the layer list"));
            continue;
        };
        for r in references(src) {
            match rank(&r) {
                Some(dep) if dep < own => {}
                Some(_) => out.push(format!(
                    "{file}.rs uses {r}.rs, which is not below it in the layer list"
                )),
                None => out.push(format!(
                    "{file}.rs refers to sip::{r}, which is not a file of the layer list \
                     (name the defining file, not a re-export)"
                )),
            }
        }
    }
    out
}

#[test]
fn layer_list_covers_every_file() {
    let mut documented = documented_order(MOD_RS);
    documented.sort_unstable();
    let mut sources: Vec<&str> = SOURCES.iter().map(|&(m, _)| m).collect();
    sources.sort_unstable();
    assert_eq!(documented, declared_modules(MOD_RS), "layer list vs mod.rs");
    assert_eq!(sources, declared_modules(MOD_RS), "SOURCES vs mod.rs");
}

#[test]
fn every_import_goes_down_the_layers() {
    let order = documented_order(MOD_RS);
    let v = violations(SOURCES, &order);
    assert!(v.is_empty(), "{}", v.join("\n"));
}

#[test]
fn reference_scan() {
    let src = "//! uses super::doc_only\n\
        use super::{a::B, c::{D, E}};\n\
        use crate::sip::f::G;\n\
        fn x() { super::h::i(); not_super::j(); }\n\
        #[cfg(test)]\n\
        mod tests {\n    use super::*;\n    use crate::sip::k::L;\n}\n";
    assert_eq!(references(src), ["a", "c", "h", "f", "k"]);
    assert_eq!(references("use super::*;"), ["*"]);
    assert_eq!(references("use super::Message;"), ["Message"]);
}

#[test]
fn upward_and_unknown_imports_are_caught() {
    let order = ["low", "mid", "high"];
    let ok = [
        ("low", ""),
        ("mid", "use super::low::A;"),
        ("high", "use super::{low::A, mid::B};"),
    ];
    assert!(violations(&ok, &order).is_empty());
    let up = [("low", "use super::high::C;"), ("mid", ""), ("high", "")];
    assert_eq!(violations(&up, &order).len(), 1);
    let itself = [("mid", "use crate::sip::mid::B;")];
    assert_eq!(violations(&itself, &order).len(), 1);
    let reexport = [("high", "use super::Message;")];
    assert_eq!(violations(&reexport, &order).len(), 1);
    let glob = [("high", "use super::*;")];
    assert_eq!(violations(&glob, &order).len(), 1);
    let unlisted = [("other", "")];
    assert_eq!(violations(&unlisted, &order).len(), 1);
}

#[test]
fn documented_order_parses() {
    let doc = "//! Layers\n//!\n//! 1. `low`: x\n//! 2. `mid`\n//! 10. `high`: y\n//! - `no`\n";
    assert_eq!(documented_order(doc), ["low", "mid", "high"]);
    assert_eq!(
        declared_modules("pub mod b;\nmod a;\n#[cfg(test)]\nmod tests;\n"),
        ["a", "b"]
    );
}
