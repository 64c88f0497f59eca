//! The crate's shape, checked on every `cargo test` (and so in CI):
//!
//! - No import circle. At every level of the module tree, the children of a module
//!   depend on each other without a circle: an edge runs from one child to another
//!   when anything in the first one's subtree names anything in the second one's. A
//!   module may use what its ancestors hold (a folder's shared types), and an ancestor
//!   may re-export its descendants; re-exports are followed to what they name, so a
//!   path through one cannot hide an edge.
//! - The top-level modules form layers, and imports point down them:
//!   `cli -> daemon -> proxy, tcp, admin -> control -> upstream -> config, sys, sample`.
//!   Modules of one layer do not import each other, except the pairs in `PEER_IMPORTS`.
//! - Non-test code: no file over `MAX_FILE_LINES` lines, no function over
//!   `MAX_FN_LINES` lines.
//!
//! It reads `src/` as text (comments, strings and `#[cfg(test)]` items removed): no
//! dependency and nothing to build, so it costs CI nothing. `cargo test --test layers
//! -- --nocapture` prints the largest files and functions.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_FILE_LINES: usize = 500;
const MAX_FN_LINES: usize = 80;

/// Top-level modules from the top layer down. A new top-level module must be placed here.
const LAYERS: &[&[&str]] = &[
    &["cli"],
    &["daemon"],
    &["proxy", "tcp", "admin"],
    &["control"],
    &["upstream"],
    &["tls"],
    &["config", "sys", "sample"],
];

/// Imports allowed between two modules of one layer, with the reason.
const PEER_IMPORTS: &[(&str, &str, &str)] = &[(
    "proxy",
    "admin",
    "the request path counts each request in the admin API's metrics",
)];

#[test]
fn no_import_circle_at_any_level_of_the_module_tree() {
    let krate = Crate::read(&src());
    let circles = krate.circles();
    assert!(
        circles.is_empty(),
        "import circles (each line: the modules, then one reference per step):\n{}",
        circles.join("\n")
    );
}

#[test]
fn imports_point_down_the_layers() {
    let krate = Crate::read(&src());
    let mut wrong = Vec::new();
    let layer_of = |name: &str| LAYERS.iter().position(|layer| layer.contains(&name));
    for top in krate.children(&[]) {
        if layer_of(&top).is_none() {
            wrong.push(format!(
                "{top}: a top-level module in no layer: add it to LAYERS in tests/layers.rs"
            ));
        }
    }
    for ((from, to), evidence) in krate.level_edges(&[]) {
        let (Some(upper), Some(lower)) = (layer_of(&from), layer_of(&to)) else {
            continue;
        };
        let allowed_peer = PEER_IMPORTS.iter().any(|(a, b, _)| *a == from && *b == to);
        if upper > lower || (upper == lower && !allowed_peer) {
            wrong.push(format!("{from} -> {to}: {evidence}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "imports that do not point down the layers {LAYERS:?}:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn no_file_or_function_is_too_long() {
    let krate = Crate::read(&src());
    let mut files: Vec<(usize, String)> = krate
        .files
        .values()
        .map(|file| (file.code_lines, file.shown.clone()))
        .collect();
    files.sort_unstable_by(|a, b| b.cmp(a));
    let mut functions: Vec<(usize, String)> = krate
        .files
        .values()
        .flat_map(|file| {
            file.functions
                .iter()
                .map(|(name, line, length)| (*length, format!("{}:{line} {name}", file.shown)))
        })
        .collect();
    functions.sort_unstable_by(|a, b| b.cmp(a));
    println!("largest files (non-test lines):");
    for (lines, file) in files.iter().take(12) {
        println!("{lines:6} {file}");
    }
    println!("longest functions (lines):");
    for (lines, function) in functions.iter().take(12) {
        println!("{lines:6} {function}");
    }
    let long_files: Vec<_> = files.iter().filter(|(n, _)| *n > MAX_FILE_LINES).collect();
    let long_fns: Vec<_> = functions
        .iter()
        .filter(|(n, _)| *n > MAX_FN_LINES)
        .collect();
    assert!(
        long_files.is_empty() && long_fns.is_empty(),
        "over {MAX_FILE_LINES} lines: {long_files:?}\nover {MAX_FN_LINES} lines: {long_fns:?}"
    );
}

/// The scanner recognises what the checks rely on.
#[test]
fn the_scanner_sees_paths_uses_and_test_code() {
    let text = r##"
        //! crate::doc::mention is a comment
        use crate::a::{b::{self, C}, d as e};
        use super::sibling::*;
        const S: &str = "crate::in_a_string";
        const R: &str = r#"super::raw"#;
        fn f<'a>(x: &'a str) -> char { let c = '{'; crate::g::h(x); c }
        #[cfg(test)]
        mod tests { use crate::only_in_tests; }
        fn g() {
            child::call();
        }
    "##;
    let file = Source::scan(text);
    let uses: Vec<String> = file.uses.iter().map(|u| u.path.join("::")).collect();
    assert_eq!(
        uses,
        [
            "crate::a::b",
            "crate::a::b::C",
            "crate::a::d",
            "super::sibling"
        ]
    );
    assert_eq!(file.uses[2].alias.as_deref(), Some("e"));
    assert!(file.uses[3].glob);
    let paths: Vec<String> = file
        .paths(&["child".to_owned()])
        .map(|p| p.1.join("::"))
        .collect();
    assert_eq!(paths, ["crate::g::h", "child::call"]);
    let names: Vec<&str> = file.functions.iter().map(|f| f.0.as_str()).collect();
    assert_eq!(names, ["f", "g"]);
    assert_eq!(file.functions[1].2, 3, "g spans three lines");
    assert_eq!(
        file.code_lines,
        text.lines().count() - 2,
        "the test module's lines"
    );
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// A module path from the crate root: `["control", "owner"]`; the root is `[]`.
type ModPath = Vec<String>;

/// One `use` leaf: `use a::b::{c as d}` gives path `a::b::c`, alias `d`.
#[derive(Debug, Clone)]
struct Use {
    path: Vec<String>,
    /// The name it brings into scope (None for a glob).
    alias: Option<String>,
    glob: bool,
    line: usize,
}

/// A source file reduced to what the checks need.
#[derive(Debug, Default)]
struct Source {
    tokens: Vec<Token>,
    uses: Vec<Use>,
    /// `mod name;` declarations (file modules).
    mods: Vec<String>,
    /// (name, first line, lines) of every function with a body.
    functions: Vec<(String, usize, usize)>,
    /// Lines of the file outside `#[cfg(test)]` items.
    code_lines: usize,
    shown: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Ident,
    /// `::`
    Path,
    /// `->` or `=>`
    Arrow,
    Punct(char),
}

#[derive(Debug, Clone)]
struct Token {
    kind: Kind,
    text: String,
    line: usize,
}

impl Source {
    fn scan(text: &str) -> Source {
        let all = lex(text);
        let (tokens, test_lines) = without_test_items(all);
        let total = text.lines().count();
        let mut source = Source {
            uses: uses(&tokens),
            mods: mods(&tokens),
            functions: functions(&tokens),
            code_lines: total - test_lines.len(),
            tokens,
            shown: String::new(),
        };
        source.uses.sort_by_key(|u| u.line);
        source
    }

    /// Paths in code (outside `use`) that start with `crate`, `super`, `self` or one
    /// of `children`, with their line.
    fn paths<'a>(
        &'a self,
        children: &'a [String],
    ) -> impl Iterator<Item = (usize, Vec<String>)> + 'a {
        let tokens = &self.tokens;
        let mut in_use = false;
        (0..tokens.len()).filter_map(move |i| {
            let token = &tokens[i];
            if token.kind == Kind::Ident && token.text == "use" {
                in_use = true;
            }
            if token.kind == Kind::Punct(';') {
                in_use = false;
            }
            let starts = token.kind == Kind::Ident
                && (["crate", "super", "self"].contains(&token.text.as_str())
                    || children.contains(&token.text))
                && tokens.get(i + 1).is_some_and(|t| t.kind == Kind::Path)
                && (i == 0 || tokens[i - 1].kind != Kind::Path);
            if in_use || !starts {
                return None;
            }
            let mut path = vec![token.text.clone()];
            let mut at = i + 1;
            while tokens.get(at).is_some_and(|t| t.kind == Kind::Path)
                && tokens.get(at + 1).is_some_and(|t| t.kind == Kind::Ident)
            {
                path.push(tokens[at + 1].text.clone());
                at += 2;
            }
            Some((token.line, path))
        })
    }
}

/// Tokens without comments, strings and character literals.
fn lex(text: &str) -> Vec<Token> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let (mut i, mut line) = (0, 1);
    let newlines = |from: usize, to: usize| chars[from..to].iter().filter(|c| **c == '\n').count();
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        let start = i;
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            loop {
                match (chars.get(i), chars.get(i + 1)) {
                    (Some('/'), Some('*')) => (depth, i) = (depth + 1, i + 2),
                    (Some('*'), Some('/')) => (depth, i) = (depth - 1, i + 2),
                    (Some(_), _) => i += 1,
                    (None, _) => break,
                }
                if depth == 0 {
                    break;
                }
            }
            line += newlines(start, i);
        } else if let Some(end) = raw_string_end(&chars, i) {
            i = end;
            line += newlines(start, i);
        } else if c == '"' || (c == 'b' && next == Some('"')) {
            i += if c == 'b' { 2 } else { 1 };
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            line += newlines(start, i.min(chars.len()));
        } else if c == '\'' || (c == 'b' && next == Some('\'')) {
            // A character literal ('x', '\n', b'x'), or a lifetime ('a).
            let at = if c == 'b' { i + 1 } else { i };
            if chars.get(at + 1) == Some(&'\\') {
                i = at + 2;
                while i < chars.len() && chars[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if chars.get(at + 2) == Some(&'\'') {
                i = at + 3;
            } else {
                i = at + 1; // a lifetime: its name follows as an identifier
            }
        } else if c.is_alphabetic() || c == '_' {
            if c == 'r' && next == Some('#') {
                i += 2; // a raw identifier: r#type
            }
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            tokens.push(Token {
                kind: Kind::Ident,
                text: word,
                line,
            });
        } else if c.is_ascii_digit() {
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
        } else if (c == '-' || c == '=') && next == Some('>') {
            // `->` and `=>` are not angle brackets.
            tokens.push(Token {
                kind: Kind::Arrow,
                text: format!("{c}>"),
                line,
            });
            i += 2;
        } else if c == ':' && next == Some(':') {
            tokens.push(Token {
                kind: Kind::Path,
                text: "::".into(),
                line,
            });
            i += 2;
        } else {
            tokens.push(Token {
                kind: Kind::Punct(c),
                text: c.to_string(),
                line,
            });
            i += 1;
        }
    }
    tokens
}

/// Where a raw string literal starting at `i` ends (`r"..."`, `r#"..."#`, `br"..."`).
fn raw_string_end(chars: &[char], i: usize) -> Option<usize> {
    let mut at = i;
    if chars.get(at) == Some(&'b') {
        at += 1;
    }
    if chars.get(at) != Some(&'r') {
        return None;
    }
    at += 1;
    let mut hashes = 0;
    while chars.get(at) == Some(&'#') {
        hashes += 1;
        at += 1;
    }
    if chars.get(at) != Some(&'"') {
        return None;
    }
    at += 1;
    loop {
        if at >= chars.len() {
            return Some(at);
        }
        if chars[at] == '"' && (1..=hashes).all(|k| chars.get(at + k) == Some(&'#')) {
            return Some(at + 1 + hashes);
        }
        at += 1;
    }
}

/// Drops `#[cfg(test)]` items; returns the rest and the lines the dropped items took.
fn without_test_items(tokens: Vec<Token>) -> (Vec<Token>, BTreeSet<usize>) {
    let is = |t: Option<&Token>, text: &str| t.is_some_and(|t| t.text == text);
    let mut kept = Vec::with_capacity(tokens.len());
    let mut lines = BTreeSet::new();
    let mut i = 0;
    while i < tokens.len() {
        let cfg_test = is(tokens.get(i), "#")
            && is(tokens.get(i + 1), "[")
            && is(tokens.get(i + 2), "cfg")
            && is(tokens.get(i + 3), "(")
            && is(tokens.get(i + 4), "test")
            && is(tokens.get(i + 5), ")")
            && is(tokens.get(i + 6), "]");
        if !cfg_test {
            kept.push(tokens[i].clone());
            i += 1;
            continue;
        }
        let first = tokens[i].line;
        // The item ends at a `;` before any block, or with its first block.
        let mut depth = 0;
        let mut end = i + 7;
        while end < tokens.len() {
            match tokens[end].kind {
                Kind::Punct('[') | Kind::Punct('(') => depth += 1,
                Kind::Punct(']') | Kind::Punct(')') => depth -= 1,
                Kind::Punct(';') if depth == 0 => break,
                Kind::Punct('{') if depth == 0 => {
                    end = matching(&tokens, end);
                    break;
                }
                _ => {}
            }
            end += 1;
        }
        let last = tokens.get(end).map_or(first, |t| t.line);
        lines.extend(first..=last);
        i = end + 1;
    }
    (kept, lines)
}

/// The index of the `}` that closes the `{` at `open`.
fn matching(tokens: &[Token], open: usize) -> usize {
    let mut depth = 0;
    for (at, token) in tokens.iter().enumerate().skip(open) {
        match token.kind {
            Kind::Punct('{') => depth += 1,
            Kind::Punct('}') => {
                depth -= 1;
                if depth == 0 {
                    return at;
                }
            }
            _ => {}
        }
    }
    tokens.len().saturating_sub(1)
}

fn mods(tokens: &[Token]) -> Vec<String> {
    (0..tokens.len().saturating_sub(2))
        .filter(|&i| {
            tokens[i].text == "mod"
                && tokens[i + 1].kind == Kind::Ident
                && tokens[i + 2].kind == Kind::Punct(';')
        })
        .map(|i| tokens[i + 1].text.clone())
        .collect()
}

/// Every function with a body: (name, line of `fn`, lines to its closing brace).
fn functions(tokens: &[Token]) -> Vec<(String, usize, usize)> {
    let mut found = Vec::new();
    for i in 0..tokens.len().saturating_sub(1) {
        if tokens[i].text != "fn" || tokens[i + 1].kind != Kind::Ident {
            continue;
        }
        let mut depth = 0;
        let mut at = i + 2;
        while at < tokens.len() {
            match tokens[at].kind {
                Kind::Punct('(') | Kind::Punct('[') | Kind::Punct('<') => depth += 1,
                Kind::Punct(')') | Kind::Punct(']') | Kind::Punct('>') => depth -= 1,
                Kind::Punct(';') if depth <= 0 => break,
                Kind::Punct('{') if depth <= 0 => {
                    let close = matching(tokens, at);
                    let lines = tokens[close].line - tokens[i].line + 1;
                    found.push((tokens[i + 1].text.clone(), tokens[i].line, lines));
                    break;
                }
                _ => {}
            }
            at += 1;
        }
    }
    found
}

/// Every `use` declaration's leaves.
fn uses(tokens: &[Token]) -> Vec<Use> {
    let mut found = Vec::new();
    for i in 0..tokens.len() {
        if tokens[i].kind == Kind::Ident && tokens[i].text == "use" {
            let mut at = i + 1;
            if tokens.get(at).is_some_and(|t| t.kind == Kind::Path) {
                continue; // `use ::extern_crate`
            }
            use_tree(tokens, &mut at, Vec::new(), &mut found);
        }
    }
    found
}

/// Parses one use tree at `at` under `prefix`.
fn use_tree(tokens: &[Token], at: &mut usize, prefix: Vec<String>, out: &mut Vec<Use>) {
    let line = tokens.get(*at).map_or(0, |t| t.line);
    let mut path = prefix;
    loop {
        let Some(token) = tokens.get(*at) else { return };
        match &token.kind {
            Kind::Ident if token.text == "self" && !path.is_empty() => {
                *at += 1;
                let alias = path.last().cloned();
                out.push(Use {
                    path: path.clone(),
                    alias: rename(tokens, at).or(alias),
                    glob: false,
                    line,
                });
                return;
            }
            Kind::Ident => {
                path.push(token.text.clone());
                *at += 1;
                if tokens.get(*at).is_some_and(|t| t.kind == Kind::Path) {
                    *at += 1;
                    continue;
                }
                let alias = path.last().cloned();
                out.push(Use {
                    path,
                    alias: rename(tokens, at).or(alias),
                    glob: false,
                    line,
                });
                return;
            }
            Kind::Punct('*') => {
                *at += 1;
                out.push(Use {
                    path,
                    alias: None,
                    glob: true,
                    line,
                });
                return;
            }
            Kind::Punct('{') => {
                *at += 1;
                loop {
                    match tokens.get(*at).map(|t| &t.kind) {
                        Some(Kind::Punct('}')) => {
                            *at += 1;
                            return;
                        }
                        Some(Kind::Punct(',')) => *at += 1,
                        Some(_) => use_tree(tokens, at, path.clone(), out),
                        None => return,
                    }
                }
            }
            _ => return,
        }
    }
}

/// `as name` after a use leaf, if any.
fn rename(tokens: &[Token], at: &mut usize) -> Option<String> {
    if tokens.get(*at).is_some_and(|t| t.text == "as") {
        let name = tokens.get(*at + 1).map(|t| t.text.clone());
        *at += 2;
        return name.filter(|n| n != "_");
    }
    None
}

/// The library crate: its module tree and every file's references.
struct Crate {
    files: BTreeMap<ModPath, Source>,
    /// (from module, to module, "file:line path") for every reference between modules.
    edges: Vec<(ModPath, ModPath, String)>,
}

impl Crate {
    fn read(src: &Path) -> Crate {
        let mut files = BTreeMap::new();
        load(src, &src.join("lib.rs"), Vec::new(), &mut files);
        let mut krate = Crate {
            files,
            edges: Vec::new(),
        };
        krate.edges = krate.references();
        krate
    }

    fn children(&self, module: &[String]) -> Vec<String> {
        self.files
            .get(module)
            .map(|f| f.mods.clone())
            .unwrap_or_default()
    }

    fn is_module(&self, path: &[String]) -> bool {
        self.files.contains_key(path)
    }

    /// `path` as written in `module`, made absolute; None for an external crate.
    fn absolute(&self, module: &[String], path: &[String]) -> Option<Vec<String>> {
        let mut base: Vec<String> = module.to_vec();
        let mut rest = path;
        match rest.first().map(String::as_str) {
            Some("crate") => {
                base.clear();
                rest = &rest[1..];
            }
            Some("self") => rest = &rest[1..],
            Some("super") => {
                while rest.first().is_some_and(|s| s == "super") {
                    base.pop()?;
                    rest = &rest[1..];
                }
            }
            Some(first) if self.children(module).iter().any(|c| c == first) => {}
            Some(first) => {
                // An alias this module imported (`use super::sibling;` then `sibling::x`).
                let aliased = self.alias(module, first)?;
                let mut full = aliased;
                full.extend_from_slice(&rest[1..]);
                return Some(full);
            }
            None => return None,
        }
        base.extend_from_slice(rest);
        Some(base)
    }

    /// The absolute path a `use` of `module` names `name` for.
    fn alias(&self, module: &[String], name: &str) -> Option<Vec<String>> {
        let file = self.files.get(module)?;
        let leaf = file
            .uses
            .iter()
            .find(|u| u.alias.as_deref() == Some(name))?;
        let first = leaf.path.first()?;
        if first == name && !self.children(module).contains(first) {
            return None; // `use tokio;` and the like
        }
        self.absolute(module, &leaf.path)
    }

    /// The module an absolute path ends in, following re-exports.
    fn resolve(&self, path: &[String], depth: usize) -> ModPath {
        let mut module: ModPath = Vec::new();
        for (index, segment) in path.iter().enumerate() {
            let mut child = module.clone();
            child.push(segment.clone());
            if self.is_module(&child) {
                module = child;
                continue;
            }
            if depth < 8 {
                if let Some(mut target) = self.alias(&module, segment) {
                    target.extend_from_slice(&path[index + 1..]);
                    return self.resolve(&target, depth + 1);
                }
            }
            break;
        }
        module
    }

    fn references(&self) -> Vec<(ModPath, ModPath, String)> {
        let mut edges = Vec::new();
        for (module, file) in &self.files {
            let mut named: Vec<(usize, Vec<String>)> =
                file.uses.iter().map(|u| (u.line, u.path.clone())).collect();
            named.extend(file.paths(&file.mods));
            for (line, path) in named {
                let Some(absolute) = self.absolute(module, &path) else {
                    continue;
                };
                let target = self.resolve(&absolute, 0);
                if &target != module {
                    let evidence = format!("{}:{line} {}", file.shown, path.join("::"));
                    edges.push((module.clone(), target, evidence));
                }
            }
        }
        edges
    }

    /// Edges between the children of `parent`: (from child, to child) with one reference.
    fn level_edges(&self, parent: &[String]) -> BTreeMap<(String, String), String> {
        let mut level = BTreeMap::new();
        let child_of = |module: &ModPath| -> Option<String> {
            module
                .starts_with(parent)
                .then(|| module.get(parent.len()).cloned())?
        };
        for (from, to, evidence) in &self.edges {
            let (Some(a), Some(b)) = (child_of(from), child_of(to)) else {
                continue;
            };
            if a != b {
                level.entry((a, b)).or_insert_with(|| evidence.clone());
            }
        }
        level
    }

    /// Every circle among the children of any module, described.
    fn circles(&self) -> Vec<String> {
        let mut found = Vec::new();
        for parent in self.files.keys() {
            let edges = self.level_edges(parent);
            for circle in cycles(&edges) {
                let scope = if parent.is_empty() {
                    "crate".to_owned()
                } else {
                    parent.join("::")
                };
                let steps: Vec<String> = circle
                    .windows(2)
                    .map(|pair| {
                        let key = (pair[0].clone(), pair[1].clone());
                        format!("  {} -> {}: {}", pair[0], pair[1], edges[&key])
                    })
                    .collect();
                found.push(format!(
                    "in {scope}: {}\n{}",
                    circle.join(" -> "),
                    steps.join("\n")
                ));
            }
        }
        found
    }
}

/// One shortest circle through each group of nodes that reach each other, as a
/// closed walk (first = last).
fn cycles(edges: &BTreeMap<(String, String), String>) -> Vec<Vec<String>> {
    let successors = |node: &String| -> Vec<String> {
        edges
            .keys()
            .filter(|(a, _)| a == node)
            .map(|(_, b)| b.clone())
            .collect()
    };
    let starts: BTreeSet<String> = edges.keys().map(|(a, _)| a.clone()).collect();
    let mut seen = BTreeSet::new();
    let mut found = Vec::new();
    for start in starts {
        if seen.contains(&start) {
            continue;
        }
        // Breadth-first from `start` until the walk comes back to it.
        let mut parent: BTreeMap<String, String> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([start.clone()]);
        while let Some(node) = queue.pop_front() {
            if node == start && parent.contains_key(&start) {
                let mut walk = vec![start.clone()];
                let mut at = parent[&start].clone();
                while at != start {
                    walk.push(at.clone());
                    at = parent[&at].clone();
                }
                walk.push(start.clone());
                walk.reverse();
                seen.extend(walk.iter().cloned());
                found.push(walk);
                break;
            }
            for next in successors(&node) {
                if !parent.contains_key(&next) {
                    parent.insert(next.clone(), node.clone());
                    queue.push_back(next);
                }
            }
        }
    }
    found
}

/// Reads the module in `file` at `module` and, recursively, its file submodules.
fn load(src: &Path, file: &Path, module: ModPath, out: &mut BTreeMap<ModPath, Source>) {
    let text = std::fs::read_to_string(file)
        .unwrap_or_else(|error| panic!("read {}: {error}", file.display()));
    let mut source = Source::scan(&text);
    source.shown = file
        .strip_prefix(src.parent().unwrap_or(src))
        .unwrap_or(file)
        .display()
        .to_string();
    let directory = match file.file_name().and_then(|n| n.to_str()) {
        Some("lib.rs" | "mod.rs") => file.parent().map(Path::to_path_buf),
        _ => file
            .parent()
            .map(|dir| dir.join(file.file_stem().unwrap_or_default())),
    }
    .unwrap_or_default();
    let children = source.mods.clone();
    out.insert(module.clone(), source);
    for child in children {
        let flat = directory.join(format!("{child}.rs"));
        let nested = directory.join(&child).join("mod.rs");
        let path = if flat.exists() { flat } else { nested };
        let mut path_of_child = module.clone();
        path_of_child.push(child);
        load(src, &path, path_of_child, out);
    }
}
