//! The crate's layers, as a test: a module may use only modules below it in
//! [`ORDER`] (data flows down and back up; no import goes up), so that no
//! import cycle between modules can come back. `sip/` checks its own files
//! the same way (sip/tests/layers.rs).

/// Bottom first.
const ORDER: &[&str] = &[
    "sip",
    "time",
    "rng",
    "auth",
    "config",
    "store",
    "transport",
    "media",
    "transaction",
    "routing",
    "registrar",
    "calls",
    "malformed",
    "core",
    "control",
    "cli",
    "server",
];

fn sources(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The crate module a file under src/ belongs to.
fn module_of(src: &std::path::Path, file: &std::path::Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel
        .components()
        .next()?
        .as_os_str()
        .to_string_lossy()
        .into_owned();
    Some(first.trim_end_matches(".rs").to_string())
}

/// The code of a file without its `#[cfg(test)]` tail and comment lines:
/// tests may use anything.
fn code(text: &str) -> String {
    let end = text.find("#[cfg(test)]").unwrap_or(text.len());
    text[..end]
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn violations(module: &str, text: &str) -> Vec<String> {
    let rank = |m: &str| ORDER.iter().position(|x| *x == m);
    let Some(mine) = rank(module) else {
        return vec![format!("module {module} is not in layers::ORDER")];
    };
    let mut bad = Vec::new();
    let code = code(text);
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if name == "lock" || name == module || name.is_empty() {
            continue;
        }
        match rank(&name) {
            Some(r) if r < mine => {}
            Some(_) => bad.push(format!("{module} uses crate::{name} (not below it)")),
            None => {}
        }
    }
    bad
}

#[test]
fn imports_only_go_down() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut bad = Vec::new();
    for f in &files {
        let Some(m) = module_of(&src, f) else {
            continue;
        };
        if matches!(m.as_str(), "lib" | "main" | "layers")
            || f.components().any(|c| c.as_os_str() == "tests")
        {
            continue;
        }
        let text = std::fs::read_to_string(f).unwrap();
        bad.extend(
            violations(&m, &text)
                .into_iter()
                .map(|v| format!("{}: {v}", f.display())),
        );
    }
    bad.sort();
    bad.dedup();
    assert!(bad.is_empty(), "imports that go up:\n{}", bad.join("\n"));
}

#[test]
fn an_upward_import_is_caught() {
    assert!(violations("transport", "use crate::core::Core;\n").len() == 1);
    assert!(violations("core", "use crate::transport::Peer;\n").is_empty());
    assert!(violations("core", "#[cfg(test)]\nmod t { use crate::server::X; }").is_empty());
    assert!(!violations("nosuch", "").is_empty());
}
