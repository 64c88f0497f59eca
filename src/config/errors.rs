//! Errors: toml/serde errors (syntax, unknown key, wrong type) turned into
//! `file:line: key: message`. The source text travels with the file name so any span
//! becomes a line, and a re-parse into a spanned tree recovers the dotted key.

use std::ops::Range;

use toml::de::{DeTable, DeValue};

use super::raw::{DURATION_KEYS, OFF_KEYS, TABLE_ARRAYS};
use super::ConfigError;

pub(super) struct Source<'a> {
    pub(super) text: &'a str,
    pub(super) file: &'a str,
}

impl Source<'_> {
    pub(super) fn line(&self, span: &Range<usize>) -> usize {
        line_of(self.text, span.start)
    }

    pub(super) fn error(
        &self,
        span: Range<usize>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        self.error_at_line(self.line(&span), key, message)
    }

    pub(super) fn error_at_line(
        &self,
        line: usize,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.to_string(),
            line,
            key: key.into(),
            message: message.into(),
        }
    }

    /// Turns a toml/serde error (syntax, unknown key, wrong type) into our format:
    /// the dotted key it concerns, its line, and what to do.
    pub(super) fn toml_error(&self, err: &toml::de::Error) -> ConfigError {
        let offset = err.span().map(|span| span.start);
        let line = offset.map_or(0, |offset| line_of(self.text, offset));
        // toml's error does not expose the key path, so re-parse into a spanned tree
        // and look the offset up there. After a syntax error the tree is partial and
        // its spans unreliable: then only trust a key written on the error line.
        let (root, syntax_errors) = DeTable::parse_recoverable(self.text);
        let entries = entries(root.get_ref());
        if syntax_errors.is_empty() {
            let path = offset.and_then(|offset| innermost_at(&entries, offset));
            let (key, message) = describe_serde_error(path, err.message());
            self.error_at_line(line, key, message)
        } else {
            let key = offset
                .and_then(|offset| key_on_line(&entries, self.text, offset))
                .unwrap_or_else(|| line_key(self.text, line));
            let message = syntax_message(&key, err.message());
            self.error_at_line(line, key, message)
        }
    }
}

/// 1-based line of a byte offset (offsets past the end land on the last line).
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    // Bytes, not chars: `offset` may fall inside a multi-byte character.
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// A key (or array element) of the parsed document with its spans and dotted path
/// (`health.interval`, `backend[1].url`).
struct Entry {
    key: Range<usize>,
    value: Range<usize>,
    path: String,
}

/// Every key of the document, parents before children.
fn entries(root: &DeTable<'_>) -> Vec<Entry> {
    let mut out = Vec::new();
    collect_table(root, "", &mut out);
    out
}

fn collect_table(table: &DeTable<'_>, prefix: &str, out: &mut Vec<Entry>) {
    for (key, value) in table.iter() {
        let path = if prefix.is_empty() {
            key.get_ref().to_string()
        } else {
            format!("{prefix}.{}", key.get_ref())
        };
        out.push(Entry {
            key: key.span(),
            value: value.span(),
            path: path.clone(),
        });
        collect_value(value.get_ref(), &path, out);
    }
}

fn collect_value(value: &DeValue<'_>, path: &str, out: &mut Vec<Entry>) {
    match value {
        DeValue::Table(table) => collect_table(table, path, out),
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                // An element of `[[backend]]` is spanned by its header.
                let path = format!("{path}[{i}]");
                out.push(Entry {
                    key: item.span(),
                    value: item.span(),
                    path: path.clone(),
                });
                collect_value(item.get_ref(), &path, out);
            }
        }
        _ => {}
    }
}

/// Path of the innermost entry whose key or value span contains `offset`.
fn innermost_at(entries: &[Entry], offset: usize) -> Option<String> {
    // Inclusive end: some errors point just past a value (an empty span there).
    let contains = |span: &Range<usize>| span.start <= offset && offset <= span.end;
    let mut best: Option<(usize, &Entry)> = None;
    for entry in entries {
        for span in [&entry.key, &entry.value] {
            // `<=`: on a tie the later entry is the deeper one (backend[0] over backend).
            if contains(span) && best.map_or(true, |(len, _)| span.len() <= len) {
                best = Some((span.len(), entry));
            }
        }
    }
    best.map(|(_, entry)| entry.path.clone())
}

/// Path of the last key written on the line of `offset`, at or before it.
fn key_on_line(entries: &[Entry], text: &str, offset: usize) -> Option<String> {
    let line = line_of(text, offset);
    entries
        .iter()
        .filter(|e| e.key.start <= offset && line_of(text, e.key.start) == line)
        .max_by_key(|e| e.key.start)
        .map(|e| e.path.clone())
}

/// Our message for an error serde raised while mapping the document onto the raw
/// types; `path` is where it points (for "missing field", the table).
fn describe_serde_error(path: Option<String>, message: &str) -> (String, String) {
    let names = backticked(message);
    match names.split_first() {
        Some((unknown, expected)) if message.starts_with("unknown field") => {
            let key = path.unwrap_or_else(|| unknown.to_string());
            let hint = unknown_key_hint(&key, unknown, expected);
            (key, format!("unknown key `{unknown}`; {hint}"))
        }
        Some((missing, _)) if message.starts_with("missing field") => {
            let key =
                path.map_or_else(|| missing.to_string(), |table| format!("{table}.{missing}"));
            (key, "missing required key".to_string())
        }
        _ => {
            let key = path.unwrap_or_else(|| "(file)".to_string());
            // Counts are i64 only to catch negatives ourselves; don't leak the type.
            let message = message.replace("expected i64", "expected a whole number");
            let hint = type_hint(&key, &message);
            (key, format!("{message}{hint}"))
        }
    }
}

fn syntax_message(key: &str, message: &str) -> String {
    if message == "duplicate key" {
        let name = key.rsplit('.').next().unwrap_or(key);
        format!("TOML syntax error: duplicate key: `{name}` is defined more than once")
    } else {
        format!("TOML syntax error: {message}")
    }
}

/// The `names` serde quotes in backticks, in order: for "unknown field `a`, expected
/// one of `b`, `c`" that is [a, b, c].
fn backticked(message: &str) -> Vec<&str> {
    message.split('`').skip(1).step_by(2).collect()
}

/// "did you mean" plus the keys valid where the unknown one was found.
fn unknown_key_hint(key: &str, unknown: &str, expected: &[&str]) -> String {
    let suggestion = expected
        .iter()
        .map(|name| (edit_distance(unknown, name), name))
        .filter(|(distance, _)| *distance <= 2)
        .min()
        .map(|(_, name)| format!("did you mean `{name}`? "))
        .unwrap_or_default();
    if expected.is_empty() {
        return format!("{suggestion}no keys are allowed here");
    }
    // The table the key sits in, as written in the file: [health], [[backend]].
    let place = match key.rsplit_once('.') {
        None => "valid top-level keys".to_string(),
        Some((parent, _)) => match parent.strip_suffix(']').and_then(|p| p.rsplit_once('[')) {
            Some((array, _)) => format!("valid keys in [[{array}]]"),
            None => format!("valid keys in [{parent}]"),
        },
    };
    format!("{suggestion}{place}: {}", expected.join(", "))
}

/// Levenshtein distance, for typo suggestions on short key names.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut row = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = prev[j] + usize::from(ca != *cb);
            row.push(substitute.min(prev[j + 1] + 1).min(row[j] + 1));
        }
        prev = row;
    }
    prev[b.len()]
}

/// Extra advice for the two type mistakes people make most: an unquoted duration,
/// and `[backend]` / `[tcp]` written with single brackets.
fn type_hint(key: &str, message: &str) -> String {
    let field = key.rsplit('.').next().unwrap_or(key);
    if DURATION_KEYS.contains(&field) && message.contains("expected a string") {
        let off = if OFF_KEYS.contains(&field) {
            " (or \"off\" to disable)"
        } else {
            ""
        };
        return format!(
            "; durations are quoted strings with a unit, e.g. \"2s\", \"500ms\" or \"1m\"{off}"
        );
    }
    match TABLE_ARRAYS.iter().find(|(array, _)| *array == key) {
        Some((array, what)) => {
            format!("; write each {what} as its own [[{array}]] table (double brackets)")
        }
        None => String::new(),
    }
}

/// For errors the parser could not tie to a key: what starts the offending line.
fn line_key(text: &str, line: usize) -> String {
    let content = match line {
        0 => "",
        n => text.lines().nth(n - 1).unwrap_or(""),
    };
    let head = content.split('=').next().unwrap_or("").trim();
    if head.is_empty() {
        "(file)".to_string()
    } else {
        head.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Entries of `text`, which must be valid TOML.
    fn entries_of(text: &str) -> Vec<Entry> {
        let root = DeTable::parse(text).expect("valid TOML");
        entries(root.get_ref())
    }

    #[test]
    fn line_of_counts_newlines_before_the_offset() {
        let text = "a = 1\nb = 2\r\nc = 3";
        assert_eq!(line_of(text, 0), 1);
        assert_eq!(line_of(text, 5), 1, "the newline itself is on its line");
        assert_eq!(line_of(text, 6), 2);
        assert_eq!(line_of(text, text.find('c').unwrap()), 3);
        assert_eq!(line_of(text, 10_000), 3, "past the end: last line");
        assert_eq!(line_of("", 0), 1);
    }

    #[test]
    fn line_of_accepts_an_offset_inside_a_multibyte_character() {
        let text = "é\né";
        assert_eq!(line_of(text, 1), 1);
        assert_eq!(line_of(text, 4), 2);
    }

    #[test]
    fn innermost_at_finds_keys_values_and_array_elements() {
        let text = "[health]\nrise = 2\n[[backend]]\nname = \"a\"\n[[backend]]\nurl = \"b\"\n";
        let entries = entries_of(text);
        let at = |needle: &str| innermost_at(&entries, text.find(needle).unwrap());
        assert_eq!(at("rise").as_deref(), Some("health.rise"));
        assert_eq!(at("2\n").as_deref(), Some("health.rise"));
        assert_eq!(at("[health]").as_deref(), Some("health"));
        assert_eq!(at("\"b\"").as_deref(), Some("backend[1].url"));
        // The first header spans both `backend` (the array) and `backend[0]`.
        assert_eq!(at("[[backend]]").as_deref(), Some("backend[0]"));
        let second_header = text.rfind("[[backend]]").unwrap();
        assert_eq!(
            innermost_at(&entries, second_header).as_deref(),
            Some("backend[1]")
        );
    }

    #[test]
    fn key_on_line_ignores_keys_on_other_lines() {
        let text = "[proxy]\nlisten = \"a\n[failover]\nfailback = \"x\"\n";
        let (root, errors) = DeTable::parse_recoverable(text);
        assert!(!errors.is_empty(), "the text has a syntax error");
        let entries = entries(root.get_ref());
        let offset = text.find("\"a").unwrap() + 2;
        assert_eq!(
            key_on_line(&entries, text, offset).as_deref(),
            Some("proxy.listen")
        );
        assert_eq!(key_on_line(&entries, text, 1).as_deref(), Some("proxy"));
        assert_eq!(key_on_line(&[], text, offset), None);
    }

    #[test]
    fn backticked_returns_the_quoted_names_in_order() {
        let message = "unknown field `intervall`, expected one of `path`, `interval`";
        assert_eq!(backticked(message), ["intervall", "path", "interval"]);
        assert!(backticked("no names here").is_empty());
    }

    #[test]
    fn describe_serde_error_names_the_key_and_suggests() {
        let (key, message) = describe_serde_error(
            Some("health.intervall".to_string()),
            "unknown field `intervall`, expected `interval` or `rise`",
        );
        assert_eq!(key, "health.intervall");
        assert_eq!(
            message,
            "unknown key `intervall`; did you mean `interval`? valid keys in [health]: interval, rise"
        );

        let (key, _) = describe_serde_error(None, "unknown field `x`, expected `a`");
        assert_eq!(key, "x", "without a path the field itself is the key");

        let (key, message) =
            describe_serde_error(Some("backend[2]".to_string()), "missing field `url`");
        assert_eq!(
            (key.as_str(), message.as_str()),
            ("backend[2].url", "missing required key")
        );

        let (key, message) = describe_serde_error(
            Some("health.fall".to_string()),
            "invalid type: string \"3\", expected i64",
        );
        assert_eq!(key, "health.fall");
        assert_eq!(
            message,
            "invalid type: string \"3\", expected a whole number"
        );
    }

    #[test]
    fn unknown_key_hint_names_the_table_as_written() {
        assert_eq!(
            unknown_key_hint("backend[1].urll", "urll", &["name", "url"]),
            "did you mean `url`? valid keys in [[backend]]: name, url"
        );
        assert_eq!(
            unknown_key_hint("zzz", "zzz", &["proxy", "admin"]),
            "valid top-level keys: proxy, admin"
        );
        assert_eq!(
            unknown_key_hint("a.b", "b", &[]),
            "no keys are allowed here"
        );
    }

    #[test]
    fn edit_distance_counts_single_character_edits() {
        assert_eq!(edit_distance("interval", "interval"), 0);
        assert_eq!(edit_distance("intervall", "interval"), 1);
        assert_eq!(edit_distance("helth", "health"), 1);
        assert_eq!(edit_distance("rsie", "rise"), 2);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn type_hint_only_for_durations_and_table_arrays() {
        let wrong = "invalid type: integer `2`, expected a string";
        assert!(type_hint("health.interval", wrong).contains("\"2s\""));
        assert!(type_hint("proxy.retry_after", wrong).contains("\"2s\""));
        assert_eq!(type_hint("backend[0].url", wrong), "");
        assert!(
            type_hint("backend", "invalid type: map, expected a sequence").contains("[[backend]]")
        );
        let tcp = type_hint("tcp", "invalid type: map, expected a sequence");
        assert!(
            tcp.contains("each listener as its own [[tcp]] table"),
            "{tcp}"
        );
        let off = type_hint(
            "tcp[0].idle_timeout",
            "invalid type: boolean `false`, expected a string",
        );
        assert!(off.contains("\"2s\"") && off.contains("\"off\""), "{off}");
        assert!(!type_hint("failover.drain_timeout", wrong).contains("off"));
    }

    #[test]
    fn line_key_takes_the_text_before_the_equals_sign() {
        let text = "[health\nrise = 2\n";
        assert_eq!(line_key(text, 1), "[health");
        assert_eq!(line_key(text, 2), "rise");
        assert_eq!(line_key(text, 0), "(file)");
        assert_eq!(line_key(text, 99), "(file)");
    }

    #[test]
    fn errors_display_as_file_line_key_message() {
        let src = Source {
            text: "x = 1\ny = 2\n",
            file: "f.toml",
        };
        let err = src.error(6..7, "y", "bad");
        assert_eq!(err.to_string(), "f.toml:2: y: bad");
    }
}
