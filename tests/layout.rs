//! The source tree's shape, as issue 10 asks for it: no source file over 500
//! lines, and no import cycle between the library's modules.
//!
//! The import graph has an edge from module `a` to module `b` when `a` has a
//! `use crate::…` or `use super::…` naming `b` or an item of `b`. Imports
//! by a module's own name for its submodules (`use child::…`, `self::…`)
//! are the module tree and are left out, and so are the crate root's
//! re-exports.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

const MAX_LINES: usize = 500;

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn no_source_file_is_over_500_lines() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in [
        "src",
        "tests",
        "benches",
        "examples",
        "check/src",
        "fuzz/fuzz_targets",
    ] {
        sources(&root.join(dir), &mut files);
    }
    assert!(files.len() > 50, "found only {} files", files.len());
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let lines = fs::read_to_string(f).ok()?.lines().count();
            (lines > MAX_LINES).then(|| format!("{} ({lines} lines)", f.display()))
        })
        .collect();
    assert!(long.is_empty(), "over {MAX_LINES} lines: {long:#?}");
}

/// The module path of a file under `src` (`policy::call` for
/// `src/policy/call/mod.rs`; the crate root is the empty path).
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file
        .strip_prefix(src)
        .expect("under src")
        .with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

/// The paths of one `use` tree, braces expanded (`a::{b, c::d}` gives
/// `a::b` and `a::c::d`).
fn expand(tree: &str, out: &mut Vec<String>) {
    let Some(open) = tree.find('{') else {
        out.push(tree.trim_end_matches("::").to_string());
        return;
    };
    let prefix = &tree[..open];
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let mut depth = 0;
    let mut start = 0;
    let mut items = Vec::new();
    for (i, ch) in inner.char_indices() {
        match ch {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&inner[start..]);
    for item in items.into_iter().filter(|i| !i.is_empty()) {
        if item == "self" {
            out.push(prefix.trim_end_matches("::").to_string());
        } else {
            expand(&format!("{prefix}{item}"), out);
        }
    }
}

/// The `use` trees of a file, outside its `#[cfg(test)]` modules.
fn uses(text: &str) -> Vec<String> {
    let code = match text.find("#[cfg(test)]\nmod tests {") {
        Some(at) => &text[..at],
        None => text,
    };
    let mut trees = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("use ") {
        let before = &rest[..at];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let lead = before[line_start..].trim();
        let is_use = lead.is_empty() || lead.starts_with("pub") || lead.ends_with(']');
        let after = &rest[at + 4..];
        let Some(end) = after.find(';') else { break };
        if is_use {
            // Renames (`a as b`) only change the last segment, which the
            // graph does not need.
            trees.push(after[..end].split_whitespace().collect());
        }
        rest = &after[end..];
    }
    trees
}

#[test]
fn no_import_cycle_between_modules() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let modules: BTreeMap<Vec<String>, PathBuf> = files
        .iter()
        .map(|f| (module_of(&src, f), f.clone()))
        .collect();
    let mut edges: BTreeMap<&Vec<String>, BTreeSet<&Vec<String>>> = BTreeMap::new();
    for (module, file) in &modules {
        let text = fs::read_to_string(file).expect("readable");
        let mut paths = Vec::new();
        for tree in uses(&text) {
            expand(&tree, &mut paths);
        }
        for path in paths {
            let mut parts: Vec<&str> = path.split("::").collect();
            let mut base: Vec<String> = match parts.first() {
                Some(&"crate") => Vec::new(),
                Some(&"super") | Some(&"self") => module.clone(),
                _ => continue,
            };
            if parts[0] == "self" {
                // The module tree itself.
                continue;
            }
            if parts[0] == "crate" {
                parts.remove(0);
            }
            while parts.first() == Some(&"super") {
                parts.remove(0);
                base.pop();
            }
            // The longest prefix that names a module.
            let target = (0..=parts.len()).rev().find_map(|n| {
                let mut m = base.clone();
                m.extend(parts[..n].iter().map(|s| s.to_string()));
                modules.get_key_value(&m).map(|(k, _)| k)
            });
            // The crate root re-exports: its imports are the crate's face.
            if let Some(target) = target
                && target != module
                && !module.is_empty()
            {
                edges.entry(module).or_default().insert(target);
            }
        }
    }
    assert!(
        edges.values().map(BTreeSet::len).sum::<usize>() > 100,
        "the graph should have the library's imports"
    );
    // A module that reaches itself through the graph is on a cycle.
    let mut cycles = Vec::new();
    for start in edges.keys() {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<&Vec<String>> = edges[start].iter().copied().collect();
        while let Some(m) = stack.pop() {
            if m == *start {
                cycles.push(start.join("::"));
                break;
            }
            if seen.insert(m) {
                stack.extend(edges.get(m).into_iter().flatten().copied());
            }
        }
    }
    assert!(cycles.is_empty(), "modules on an import cycle: {cycles:?}");
}
