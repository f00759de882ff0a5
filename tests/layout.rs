//! The source's shape, held: no file in `src/` past 800 lines, and no import loop among the
//! crate's top-level modules (a module that uses another is not used by it, directly or
//! through others).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            sources(&path, found);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            found.push(path);
        }
    }
}

fn src() -> (PathBuf, Vec<PathBuf>) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root, &mut files);
    files.sort();
    (root, files)
}

#[test]
fn no_file_in_src_is_past_800_lines() {
    let (root, files) = src();
    let long: Vec<String> = files
        .iter()
        .filter_map(|path| {
            let lines = std::fs::read_to_string(path).ok()?.lines().count();
            let name = path.strip_prefix(&root).ok()?.display().to_string();
            (lines > 800).then(|| format!("{name}: {lines} lines"))
        })
        .collect();
    assert!(long.is_empty(), "split by subject: {long:?}");
}

/// The top-level module a file belongs to (`store` for `src/store/redis/mod.rs`); `None`
/// for the crate root.
fn module_of(root: &Path, path: &Path) -> Option<String> {
    let relative = path.strip_prefix(root).ok()?;
    let first = relative.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (name != "lib").then(|| name.to_owned())
}

/// The top-level modules `text` (code, not comments or tests) names as `crate::module`.
fn uses(text: &str) -> BTreeSet<String> {
    let code = text.split("#[cfg(test)]").next().unwrap_or_default();
    let mut used = BTreeSet::new();
    for line in code.lines() {
        if line.trim_start().starts_with("//") {
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            if !name.is_empty() {
                used.insert(name);
            }
        }
    }
    used
}

#[test]
fn no_import_loop_among_the_top_level_modules() {
    let (root, files) = src();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for path in &files {
        let Some(module) = module_of(&root, path) else {
            continue;
        };
        if path.file_name().is_some_and(|name| name == "tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let deps = graph.entry(module.clone()).or_default();
        deps.extend(uses(&text).into_iter().filter(|dep| *dep != module));
    }
    // A loop is a module that reaches itself.
    for start in graph.keys() {
        let mut seen = BTreeSet::new();
        let mut path_to: BTreeMap<String, String> = BTreeMap::new();
        let mut todo: Vec<String> = graph[start].iter().cloned().collect();
        for dep in &todo {
            path_to.insert(dep.clone(), format!("{start} -> {dep}"));
        }
        while let Some(module) = todo.pop() {
            if !seen.insert(module.clone()) {
                continue;
            }
            let route = path_to[&module].clone();
            assert_ne!(&module, start, "an import loop: {route}");
            for next in graph.get(&module).into_iter().flatten() {
                path_to
                    .entry(next.clone())
                    .or_insert_with(|| format!("{route} -> {next}"));
                todo.push(next.clone());
            }
        }
    }
}
