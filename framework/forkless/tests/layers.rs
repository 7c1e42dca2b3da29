//! The layer rule, checked: a module of `framework/forkless/src` may only
//! import modules below it (ARCHITECTURE.md, "Layers").
//!
//! Every file is parsed with `syn`; every `use` item and every path that
//! starts with `crate::` or `super::` is resolved to the top-level module it
//! names (a name re-exported by `lib.rs` or by a module's `mod.rs` resolves to
//! the module that defines it). Test-only code (`#[cfg(test)]` items and the
//! files they declare) is not counted; `lib.rs` itself is the public face and
//! may re-export from any layer.
//!
//! Run it alone with `cargo test -p forkless --test layers`; it prints every
//! import that points up, with its file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use syn::visit::Visit;

/// The layers, bottom up. A module may import only modules that come
/// before it in this list.
const LAYERS: &[&str] = &[
    // Leaves: no imports of the crate's other modules.
    "panic",
    "clock",
    "error",
    "config",
    // Log lines, and the lines scripts read (`listening on`), text or JSON.
    "log",
    "rate_limit",
    // The process's one rustls configuration: certificates, ticket keys.
    "tls",
    // Executor per core, placement, listeners, counters, the shard timer.
    "shard",
    "time",
    "task",
    "offload",
    // Messages between shards and the coordinator.
    "bus",
    // Supervision, lifecycle, signals, shutdown, reload, upgrade.
    "coordinator",
    // HTTP on each shard.
    "http",
    // What an app holds: the `Shard` facade over the layers below.
    "app",
    // Health, metrics, status, the live monitor.
    "admin",
    "top",
    // What `#[shard_main]` calls.
    "cli",
    "runtime",
    "entry",
];

fn rank(module: &str) -> Option<usize> {
    LAYERS.iter().position(|m| *m == module)
}

/// One `.rs` file: its module path below the crate root.
struct SourceFile {
    path: PathBuf,
    module: Vec<String>,
    ast: syn::File,
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn has_cfg_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|attr| {
        attr.path().is_ident("cfg")
            && attr.meta.require_list().is_ok_and(|list| {
                list.tokens
                    .to_string()
                    .split_whitespace()
                    .any(|t| t == "test")
            })
    })
}

fn path_attr(attrs: &[syn::Attribute]) -> Option<String> {
    attrs.iter().find_map(|attr| {
        if !attr.path().is_ident("path") {
            return None;
        }
        match &attr.meta {
            syn::Meta::NameValue(nv) => match &nv.value {
                syn::Expr::Lit(syn::ExprLit {
                    lit: syn::Lit::Str(s),
                    ..
                }) => Some(s.value()),
                _ => None,
            },
            _ => None,
        }
    })
}

/// Parses the crate from `lib.rs` down, following `mod name;` items that are
/// not test-only.
fn load_crate() -> Vec<SourceFile> {
    let mut files = Vec::new();
    let mut queue = vec![(src_dir().join("lib.rs"), Vec::<String>::new())];
    while let Some((path, module)) = queue.pop() {
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let ast = syn::parse_file(&text)
            .unwrap_or_else(|e| panic!("cannot parse {}: {e}", path.display()));
        let dir = if module.is_empty() || path.file_name().is_some_and(|n| n == "mod.rs") {
            path.parent().map(Path::to_path_buf).unwrap_or_default()
        } else {
            path.with_extension("")
        };
        for item in &ast.items {
            let syn::Item::Mod(m) = item else { continue };
            if m.content.is_some() || has_cfg_test(&m.attrs) {
                continue;
            }
            let name = m.ident.to_string();
            let child = match path_attr(&m.attrs) {
                Some(p) => path.parent().map(|d| d.join(p)).unwrap_or_default(),
                None if dir.join(format!("{name}.rs")).exists() => dir.join(format!("{name}.rs")),
                None => dir.join(&name).join("mod.rs"),
            };
            let mut child_module = module.clone();
            child_module.push(name);
            queue.push((child, child_module));
        }
        files.push(SourceFile { path, module, ast });
    }
    files
}

/// Every path a file names that starts at `crate`, `super` or `self`, made
/// absolute (without the leading `crate`).
#[derive(Default)]
struct Paths {
    module: Vec<String>,
    found: Vec<Vec<String>>,
}

impl Paths {
    fn absolute(&self, segments: &[String]) -> Option<Vec<String>> {
        let mut base = self.module.clone();
        let mut rest = segments;
        match rest.first().map(String::as_str) {
            Some("crate") => {
                base.clear();
                rest = &rest[1..];
            }
            Some("super") | Some("self") => {
                while let Some(first) = rest.first() {
                    match first.as_str() {
                        "super" => {
                            base.pop()?;
                        }
                        "self" => {}
                        _ => break,
                    }
                    rest = &rest[1..];
                }
            }
            _ => return None,
        }
        base.extend(rest.iter().cloned());
        Some(base)
    }

    fn flatten(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.flatten(prefix, &p.tree);
                prefix.pop();
            }
            syn::UseTree::Name(n) => {
                let mut full = prefix.clone();
                if n.ident != "self" {
                    full.push(n.ident.to_string());
                }
                self.record(&full);
            }
            syn::UseTree::Rename(r) => {
                let mut full = prefix.clone();
                full.push(r.ident.to_string());
                self.record(&full);
            }
            syn::UseTree::Glob(_) => self.record(prefix),
            syn::UseTree::Group(g) => {
                for tree in &g.items {
                    self.flatten(prefix, tree);
                }
            }
        }
    }

    fn record(&mut self, segments: &[String]) {
        if let Some(path) = self.absolute(segments) {
            self.found.push(path);
        }
    }
}

impl<'ast> Visit<'ast> for Paths {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        let attrs: &[syn::Attribute] = match item {
            syn::Item::Mod(m) => &m.attrs,
            syn::Item::Fn(f) => &f.attrs,
            syn::Item::Impl(i) => &i.attrs,
            syn::Item::Use(u) => &u.attrs,
            syn::Item::Struct(s) => &s.attrs,
            syn::Item::Enum(e) => &e.attrs,
            syn::Item::Const(c) => &c.attrs,
            syn::Item::Static(s) => &s.attrs,
            syn::Item::Trait(t) => &t.attrs,
            syn::Item::Type(t) => &t.attrs,
            syn::Item::Macro(m) => &m.attrs,
            _ => &[],
        };
        if has_cfg_test(attrs) {
            return;
        }
        if let syn::Item::Mod(m) = item
            && m.content.is_some()
        {
            self.module.push(m.ident.to_string());
            syn::visit::visit_item(self, item);
            self.module.pop();
            return;
        }
        syn::visit::visit_item(self, item);
    }

    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        self.flatten(&mut Vec::new(), &item.tree);
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
        self.record(&segments);
        syn::visit::visit_path(self, path);
    }
}

/// Names that a module's root (`lib.rs`, `mod.rs`) re-exports from another
/// top-level module: `(module the name is reached through, name) -> defining
/// top-level module`.
fn re_exports(files: &[SourceFile]) -> BTreeMap<(String, String), String> {
    let mut map = BTreeMap::new();
    for file in files.iter().filter(|f| f.module.len() <= 1) {
        let through = file.module.first().cloned().unwrap_or_default();
        for item in &file.ast.items {
            let syn::Item::Use(u) = item else { continue };
            let mut paths = Paths {
                module: file.module.clone(),
                found: Vec::new(),
            };
            paths.flatten(&mut Vec::new(), &u.tree);
            let mut names = Vec::new();
            collect_names(&u.tree, &mut names);
            for (path, name) in paths.found.iter().zip(names) {
                if let Some(defining) = path.first()
                    && *defining != through
                {
                    map.insert((through.clone(), name), defining.clone());
                }
            }
        }
    }
    map
}

/// The names a `use` tree brings in, in the order `Paths::flatten` visits
/// them.
fn collect_names(tree: &syn::UseTree, out: &mut Vec<String>) {
    match tree {
        syn::UseTree::Path(p) => collect_names(&p.tree, out),
        syn::UseTree::Name(n) => out.push(n.ident.to_string()),
        syn::UseTree::Rename(r) => out.push(r.rename.to_string()),
        syn::UseTree::Glob(_) => out.push("*".to_owned()),
        syn::UseTree::Group(g) => g.items.iter().for_each(|t| collect_names(t, out)),
    }
}

/// Each import edge between two top-level modules, with the files behind it.
fn edges() -> BTreeMap<(String, String), BTreeSet<String>> {
    let files = load_crate();
    let modules: BTreeSet<String> = files
        .iter()
        .filter_map(|f| f.module.first().cloned())
        .collect();
    let exports = re_exports(&files);
    let mut edges: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let Some(from) = file.module.first() else {
            continue; // lib.rs: the public face
        };
        let mut paths = Paths {
            module: file.module.clone(),
            found: Vec::new(),
        };
        paths.visit_file(&file.ast);
        for path in paths.found {
            let Some(first) = path.first() else { continue };
            let to = if modules.contains(first) {
                match path.get(1) {
                    Some(name) => exports
                        .get(&(first.clone(), name.clone()))
                        .unwrap_or(first)
                        .clone(),
                    None => first.clone(),
                }
            } else if let Some(defining) = exports.get(&(String::new(), first.clone())) {
                defining.clone()
            } else {
                continue; // a macro-generated or root-only name
            };
            if to != *from {
                let shown = file
                    .path
                    .strip_prefix(src_dir())
                    .unwrap_or(&file.path)
                    .display()
                    .to_string();
                edges.entry((from.clone(), to)).or_default().insert(shown);
            }
        }
    }
    edges
}

#[test]
fn every_module_has_a_layer() {
    let files = load_crate();
    let unknown: BTreeSet<String> = files
        .iter()
        .filter_map(|f| f.module.first().cloned())
        .filter(|m| rank(m).is_none())
        .collect();
    assert!(
        unknown.is_empty(),
        "modules missing from LAYERS in tests/layers.rs (and from ARCHITECTURE.md): {unknown:?}"
    );
}

#[test]
fn imports_only_point_down() {
    let mut upward = Vec::new();
    for ((from, to), files) in edges() {
        if let (Some(a), Some(b)) = (rank(&from), rank(&to))
            && b > a
        {
            upward.push(format!(
                "{from} imports {to} (higher), in {}",
                files.into_iter().collect::<Vec<_>>().join(", ")
            ));
        }
    }
    assert!(
        upward.is_empty(),
        "{} imports point up the layers:\n  {}",
        upward.len(),
        upward.join("\n  ")
    );
}

#[test]
fn no_two_modules_import_each_other() {
    let edges = edges();
    let mutual: Vec<String> = edges
        .keys()
        .filter(|(a, b)| a < b && edges.contains_key(&(b.clone(), a.clone())))
        .map(|(a, b)| format!("{a} <-> {b}"))
        .collect();
    assert!(
        mutual.is_empty(),
        "modules importing each other: {mutual:?}"
    );
}
