//! The module table of `docs/architecture.md`, checked against the code: every `crate::…` path a file of `src/`
//! names must be allowed by its module's row, and no source file may pass 600 lines.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_LINES: usize = 600;
/// Modules that are a row of their own though they live inside another module's folder.
const NESTED: [&str; 2] = ["api::http", "api::grpc"];

/// What a module may use: every module, every module but some, or the ones listed.
#[derive(Debug)]
enum Allowed {
    Any,
    AnyBut(BTreeSet<String>),
    Only(BTreeSet<String>),
}

impl Allowed {
    fn permits(&self, module: &str) -> bool {
        match self {
            Allowed::Any => true,
            Allowed::AnyBut(refused) => !refused.contains(module),
            Allowed::Only(allowed) => allowed.contains(module),
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_owned()
}

/// The backquoted names of a table cell: "`a`, `b` (note)" → [a, b].
fn names(cell: &str) -> BTreeSet<String> {
    cell.split('`').skip(1).step_by(2).map(str::to_owned).collect()
}

/// The rows of the "Modules" table: module → what it may use.
fn table(doc: &str) -> BTreeMap<String, Allowed> {
    let section = doc.split("## Modules").nth(1).expect("docs/architecture.md has a '## Modules' section");
    let mut rows = BTreeMap::new();
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        assert_eq!(cells.len(), 3, "a row of the module table has three cells: {line}");
        let module = names(cells[0]).into_iter().next().expect("the first cell names the module");
        let uses = cells[2];
        let allowed = if uses == "any" {
            Allowed::Any
        } else if let Some(refused) = uses.strip_prefix("any but") {
            Allowed::AnyBut(names(refused))
        } else {
            Allowed::Only(names(uses))
        };
        rows.insert(module, allowed);
    }
    rows
}

/// The module a file of `src/` belongs to (`None` for the crate root files).
fn module_of(relative: &Path) -> Option<String> {
    let parts: Vec<String> = relative.iter().map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned()).collect();
    if parts.len() == 1 && (parts[0] == "lib" || parts[0] == "main") {
        return None;
    }
    if parts.len() > 1 {
        let nested = format!("{}::{}", parts[0], parts[1]);
        if NESTED.contains(&nested.as_str()) {
            return Some(nested);
        }
    }
    Some(parts[0].clone())
}

/// The module a path below `crate::` names: its first segment, or a nested module's two.
fn named_module(path: &str) -> String {
    let mut segments = path.split("::").map(str::trim);
    let first = segments.next().unwrap_or_default().to_owned();
    match segments.next() {
        Some(second) if NESTED.contains(&format!("{first}::{second}").as_str()) => format!("{first}::{second}"),
        _ => first,
    }
}

/// Every module a source text names through `crate::` (comments left out), `crate::{a, b::c}` included.
fn used_modules(source: &str) -> BTreeSet<String> {
    let code: String =
        source.lines().map(|line| line.split("//").next().unwrap_or_default()).collect::<Vec<_>>().join("\n");
    let mut used = BTreeSet::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        let preceded_by_ident = rest[..at].chars().next_back().is_some_and(|c| c.is_alphanumeric() || c == '_');
        rest = &rest[at + "crate::".len()..];
        if preceded_by_ident {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let end = group
                .char_indices()
                .find(|&(_, c)| {
                    depth += match c {
                        '{' => 1,
                        '}' => -1,
                        _ => 0,
                    };
                    depth == 0
                })
                .map_or(group.len(), |(i, _)| i);
            let mut item = String::new();
            let mut level = 0;
            for c in group[..end].chars().chain([',']) {
                match c {
                    '{' => level += 1,
                    '}' => level -= 1,
                    ',' if level == 0 => {
                        let path = std::mem::take(&mut item);
                        if !path.trim().is_empty() && path.trim() != "self" {
                            used.insert(named_module(&path));
                        }
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
        } else {
            let path: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':').collect();
            used.insert(named_module(&path));
        }
    }
    used
}

fn rust_files(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

/// What breaks the rules: "file: why", one per breach.
fn breaches(rows: &BTreeMap<String, Allowed>, files: &[(PathBuf, String)]) -> Vec<String> {
    let mut found = Vec::new();
    for (relative, source) in files {
        let lines = source.lines().count();
        if lines > MAX_LINES {
            found.push(format!("{}: {lines} lines, more than {MAX_LINES}", relative.display()));
        }
        let Some(module) = module_of(relative) else { continue };
        let Some(allowed) = rows.get(&module) else {
            found.push(format!("{}: module '{module}' has no row in the module table", relative.display()));
            continue;
        };
        for used in used_modules(source) {
            if used != module && !allowed.permits(&used) {
                found.push(format!(
                    "{}: module '{module}' uses '{used}', which its row does not allow",
                    relative.display()
                ));
            }
        }
    }
    found
}

fn sources() -> Vec<(PathBuf, String)> {
    let src = root().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let source = std::fs::read_to_string(&path).unwrap();
            (path.strip_prefix(&src).unwrap().to_owned(), source)
        })
        .collect()
}

#[test]
fn modules_use_only_what_their_row_allows_and_files_stay_short() {
    let doc = std::fs::read_to_string(root().join("docs/architecture.md")).unwrap();
    let rows = table(&doc);
    assert!(rows.len() >= 14, "the module table lists every module: {:?}", rows.keys());
    let files = sources();
    let found = breaches(&rows, &files);
    assert!(found.is_empty(), "the code breaks docs/architecture.md:\n{}", found.join("\n"));
    // Every module of the table exists, so a renamed module cannot leave a stale row that allows nothing.
    let modules: BTreeSet<String> = files.iter().filter_map(|(path, _)| module_of(path)).collect();
    for module in rows.keys() {
        assert!(modules.contains(module), "the module table lists '{module}', which src/ does not have");
    }
}

#[test]
fn the_checker_sees_every_form_of_a_path() {
    let source = "use crate::tensor::Tensor;\nuse crate::{backend::{Signature, TensorSpec}, durable, api::http::json};\n\
                  // crate::server in a comment does not count\nfn f() { crate::telemetry::Protocol::Rest; }\n";
    let used: Vec<String> = used_modules(source).into_iter().collect();
    assert_eq!(used, ["api::http", "backend", "durable", "telemetry", "tensor"]);
    let rows =
        table("## Modules\n| `tensor` | x | — |\n| `api::http` | x | `api`, `tensor` |\n| `server` | x | any |\n");
    let files = vec![
        (PathBuf::from("api/http/health.rs"), "use crate::api::Gateway;\nuse crate::backend::Backends;\n".to_owned()),
        (PathBuf::from("tensor.rs"), "use crate::tensor::DataType;\n".to_owned()),
        (PathBuf::from("server/mod.rs"), "use crate::backend::Backends;\n".to_owned()),
        (PathBuf::from("long.rs"), "\n".repeat(MAX_LINES + 1)),
    ];
    let found = breaches(&rows, &files);
    assert_eq!(found.len(), 3, "{found:?}");
    assert!(found[0].contains("module 'api::http' uses 'backend'"), "{found:?}");
    assert!(found[1].contains("601 lines"), "{found:?}");
    assert!(found[2].contains("module 'long' has no row"), "{found:?}");
}
