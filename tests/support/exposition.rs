//! A strict checker of the OpenMetrics text format that `/metrics` serves, shared by
//! the unit tests of `src/metrics.rs` (through `#[path]`) and the integration tests.
//! Written by hand because no maintained Rust parser of the format exists; it checks
//! what Prometheus' parser rejects: line syntax, metadata before samples, families
//! not interleaved, sample names matching their family's type, no duplicate series,
//! one label set per family, cumulative histograms, and the closing `# EOF`.
#![allow(dead_code)] // each user needs a different part

use std::collections::{BTreeMap, BTreeSet, HashSet};

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed and checked exposition.
#[derive(Debug, Default)]
pub struct Exposition {
    pub samples: Vec<Sample>,
    /// Family name -> type.
    pub types: BTreeMap<String, String>,
}

impl Exposition {
    /// Parses `text`, or says which line is wrong and why.
    pub fn parse(text: &str) -> Result<Exposition, String> {
        let body = text
            .strip_suffix("# EOF\n")
            .ok_or("the exposition must end with \"# EOF\\n\"")?;
        let mut parser = Parser::default();
        for (number, line) in body.lines().enumerate() {
            parser
                .line(line)
                .map_err(|error| format!("line {}: {error}: {line:?}", number + 1))?;
        }
        parser.finish_family()?;
        Ok(parser.exposition)
    }

    /// The value of the series `name` with exactly these labels.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let wanted: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels == wanted)
            .map(|s| s.value)
    }

    /// The sum over every series `name` whose labels include `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
            .sum()
    }
}

/// A series' labels other than `le`, in order.
type LabelKey = Vec<(String, String)>;

#[derive(Default)]
struct Family {
    name: String,
    kind: Option<String>,
    /// Set when the first sample is seen: metadata must come before samples.
    has_samples: bool,
    /// Sample name -> label names (without `le`); one set per sample name.
    label_names: BTreeMap<String, BTreeSet<String>>,
    /// Histogram buckets by the other labels: (le, value) in order.
    buckets: BTreeMap<LabelKey, Vec<(f64, f64)>>,
    counts: BTreeMap<LabelKey, f64>,
}

#[derive(Default)]
struct Parser {
    exposition: Exposition,
    family: Option<Family>,
    finished: HashSet<String>,
    series: HashSet<(String, LabelKey)>,
}

impl Parser {
    fn line(&mut self, line: &str) -> Result<(), String> {
        if let Some(comment) = line.strip_prefix("# ") {
            return self.metadata(comment);
        }
        if line.starts_with('#') || line.is_empty() {
            return Err("only \"# HELP\", \"# TYPE\", \"# UNIT\" comments; no blank lines".into());
        }
        self.sample(line)
    }

    fn metadata(&mut self, comment: &str) -> Result<(), String> {
        let mut words = comment.splitn(3, ' ');
        let keyword = words.next().unwrap_or_default();
        let name = words.next().ok_or("metadata without a metric name")?;
        let rest = words.next().unwrap_or_default();
        check_name(name)?;
        if self.family.as_ref().map(|f| f.name.as_str()) != Some(name) {
            self.finish_family()?;
            if !self.finished.insert(name.to_owned()) {
                return Err(format!("family {name} appears twice"));
            }
            self.family = Some(Family {
                name: name.to_owned(),
                ..Family::default()
            });
        }
        let family = self.family.as_mut().ok_or("no family")?;
        if family.has_samples {
            return Err("metadata after samples".into());
        }
        match keyword {
            "HELP" => Ok(()),
            "UNIT" if name.ends_with(&format!("_{rest}")) => Ok(()),
            "UNIT" => Err(format!("a family with unit {rest} must end with _{rest}")),
            "TYPE" => {
                const TYPES: [&str; 8] = [
                    "counter",
                    "gauge",
                    "histogram",
                    "gaugehistogram",
                    "summary",
                    "info",
                    "stateset",
                    "unknown",
                ];
                if !TYPES.contains(&rest) {
                    return Err(format!("unknown type {rest}"));
                }
                if family.kind.replace(rest.to_owned()).is_some() {
                    return Err("two TYPE lines".into());
                }
                self.exposition
                    .types
                    .insert(name.to_owned(), rest.to_owned());
                Ok(())
            }
            _ => Err(format!("unknown metadata {keyword}")),
        }
    }

    fn sample(&mut self, line: &str) -> Result<(), String> {
        let (name, labels, rest) = split_sample(line)?;
        let value = parse_value(rest.split(' ').next().unwrap_or_default())?;
        let family = self.family.as_mut().ok_or("a sample before any metadata")?;
        family.has_samples = true;
        let kind = family.kind.clone().unwrap_or_else(|| "unknown".into());
        let suffix = name
            .strip_prefix(family.name.as_str())
            .ok_or_else(|| format!("sample {name} outside its family {}", family.name))?;
        check_suffix(&kind, suffix)?;
        if matches!(kind.as_str(), "counter" | "histogram") && (value.is_nan() || value < 0.0) {
            return Err(format!("a {kind} must not be negative or NaN"));
        }
        let key: LabelKey = labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        if !self.series.insert((name.clone(), key.clone())) {
            return Err("duplicate series".into());
        }
        let without_le: LabelKey = key.iter().filter(|(k, _)| k != "le").cloned().collect();
        let names: BTreeSet<String> = without_le.iter().map(|(k, _)| k.clone()).collect();
        if let Some(previous) = family.label_names.insert(name.clone(), names.clone()) {
            if previous != names {
                return Err(format!("label names {names:?} differ from {previous:?}"));
            }
        }
        if kind == "histogram" {
            record_histogram(family, suffix, &labels, without_le, value)?;
        }
        self.exposition.samples.push(Sample {
            name,
            labels,
            value,
        });
        Ok(())
    }

    fn finish_family(&mut self) -> Result<(), String> {
        let Some(family) = self.family.take() else {
            return Ok(());
        };
        for (labels, buckets) in &family.buckets {
            let last = buckets.last().ok_or("no buckets")?;
            if last.0 != f64::INFINITY {
                return Err(format!(
                    "{}: no le=\"+Inf\" bucket for {labels:?}",
                    family.name
                ));
            }
            if buckets
                .windows(2)
                .any(|w| w[0].0 >= w[1].0 || w[0].1 > w[1].1)
            {
                return Err(format!("{}: buckets not cumulative", family.name));
            }
            if family.counts.get(labels) != Some(&last.1) {
                return Err(format!("{}: _count differs from le=\"+Inf\"", family.name));
            }
        }
        Ok(())
    }
}

fn record_histogram(
    family: &mut Family,
    suffix: &str,
    labels: &BTreeMap<String, String>,
    without_le: LabelKey,
    value: f64,
) -> Result<(), String> {
    match suffix {
        "_bucket" => {
            let le = labels.get("le").ok_or("a bucket without le")?;
            let bound = parse_value(le)?;
            family
                .buckets
                .entry(without_le)
                .or_default()
                .push((bound, value));
        }
        "_count" => {
            family.counts.insert(without_le, value);
        }
        _ => {}
    }
    Ok(())
}

fn check_suffix(kind: &str, suffix: &str) -> Result<(), String> {
    let allowed: &[&str] = match kind {
        "counter" => &["_total", "_created"],
        "histogram" | "gaugehistogram" => {
            &["_bucket", "_count", "_sum", "_created", "_gcount", "_gsum"]
        }
        "summary" => &["", "_count", "_sum", "_created"],
        "info" => &["_info"],
        _ => &[""],
    };
    if allowed.contains(&suffix) {
        Ok(())
    } else {
        Err(format!("suffix {suffix:?} not allowed for a {kind}"))
    }
}

/// `name{labels} rest` or `name rest`.
fn split_sample(line: &str) -> Result<(String, BTreeMap<String, String>, &str), String> {
    let end = line.find(['{', ' ']).ok_or("a sample without a value")?;
    let name = &line[..end];
    check_name(name)?;
    let (labels, rest) = if line[end..].starts_with('{') {
        parse_labels(&line[end + 1..])?
    } else {
        (BTreeMap::new(), &line[end..])
    };
    let rest = rest
        .strip_prefix(' ')
        .ok_or("one space must separate the series from its value")?;
    Ok((name.to_owned(), labels, rest))
}

/// Parses `a="x",b="y"}` and returns the labels and what follows the `}`.
fn parse_labels(mut text: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    loop {
        if let Some(rest) = text.strip_prefix('}') {
            return Ok((labels, rest));
        }
        let eq = text.find('=').ok_or("a label without =")?;
        let key = &text[..eq];
        check_name(key)?;
        let (value, rest) = parse_quoted(&text[eq + 1..])?;
        if labels.insert(key.to_owned(), value).is_some() {
            return Err(format!("label {key} twice"));
        }
        text = match rest.strip_prefix(',') {
            Some(next) => next,
            None if rest.starts_with('}') => rest,
            None => return Err("labels must be separated by ','".into()),
        };
    }
}

/// `"value"...` with `\\`, `\"` and `\n` escapes.
fn parse_quoted(text: &str) -> Result<(String, &str), String> {
    let body = text
        .strip_prefix('"')
        .ok_or("a label value must be quoted")?;
    let mut value = String::new();
    let mut chars = body.char_indices();
    while let Some((index, c)) = chars.next() {
        match c {
            '"' => return Ok((value, &body[index + 1..])),
            '\\' => match chars.next() {
                Some((_, '\\')) => value.push('\\'),
                Some((_, '"')) => value.push('"'),
                Some((_, 'n')) => value.push('\n'),
                _ => return Err("a bad escape in a label value".into()),
            },
            _ => value.push(c),
        }
    }
    Err("an unterminated label value".into())
}

fn parse_value(text: &str) -> Result<f64, String> {
    match text {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ if text
            .chars()
            .all(|c| c.is_ascii_digit() || "+-.eE".contains(c)) =>
        {
            text.parse()
                .map_err(|_| format!("value {text:?} is not a number"))
        }
        _ => Err(format!("value {text:?} is not a number")),
    }
}

fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':');
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
        Ok(())
    } else {
        Err(format!("{name:?} is not a valid metric or label name"))
    }
}
