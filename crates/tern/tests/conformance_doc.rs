//! Checks `docs/conformance.md` against the rule catalogue and the test sources: every rule of
//! `docs/conformance-rules.tsv` has exactly one row in its spec's table, every cited test exists,
//! and the summary counts match the tables.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

const SPECS: [&str; 2] = ["3.1.1", "5.0"];
const STATUSES: [&str; 3] = ["tested", "n/a", "left"];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One table row: rule, status, citations.
struct Row {
    rule: String,
    status: String,
    proved_by: String,
}

/// The parsed document.
#[derive(Default)]
struct Doc {
    /// Spec -> (total, tested, n/a, left) from the summary lines.
    summary: BTreeMap<String, [usize; 4]>,
    /// Spec -> rows of its table, in order.
    tables: BTreeMap<String, Vec<Row>>,
    /// Spec -> rules listed under "Rules left, and why".
    left_reasons: BTreeMap<String, Vec<String>>,
}

/// Where the parser is in the document.
enum Section {
    Intro,
    Table(String),
    Left(String),
}

fn number(s: &str) -> usize {
    s.trim()
        .parse()
        .unwrap_or_else(|_| panic!("not a number: {s:?}"))
}

/// `MQTT 5.0: 238 rules — 155 tested, 35 not applicable, 48 left (see below)`.
fn summary_line(line: &str) -> Option<(String, [usize; 4])> {
    let rest = line.strip_prefix("MQTT ")?;
    let (spec, rest) = rest.split_once(": ")?;
    let (total, rest) = rest.split_once(" rules — ")?;
    let (tested, rest) = rest.split_once(" tested, ")?;
    let (na, rest) = rest.split_once(" not applicable, ")?;
    let (left, _) = rest.split_once(" left")?;
    Some((
        spec.to_string(),
        [number(total), number(tested), number(na), number(left)],
    ))
}

fn parse(text: &str) -> Doc {
    let mut doc = Doc::default();
    let mut section = Section::Intro;
    let mut in_left = false;
    for line in text.lines() {
        if let Some(title) = line.strip_prefix("## ") {
            in_left = title.trim() == "Rules left, and why";
            section = match title.strip_prefix("MQTT ") {
                Some(spec) if !in_left => Section::Table(spec.trim().to_string()),
                _ => Section::Intro,
            };
            continue;
        }
        if in_left && let Some(spec) = line.strip_prefix("### MQTT ") {
            section = Section::Left(spec.trim().to_string());
            continue;
        }
        match &section {
            Section::Intro => {
                if let Some((spec, counts)) = summary_line(line) {
                    assert!(
                        doc.summary.insert(spec.clone(), counts).is_none(),
                        "two summary lines for {spec}"
                    );
                }
            }
            Section::Table(spec) => {
                if !line.starts_with("| MQTT-") {
                    continue;
                }
                let cells: Vec<&str> = line.trim().trim_matches('|').split('|').collect();
                assert_eq!(cells.len(), 4, "row without 4 cells: {line}");
                doc.tables.entry(spec.clone()).or_default().push(Row {
                    rule: cells[0].trim().to_string(),
                    status: cells[2].trim().to_string(),
                    proved_by: cells[3].trim().to_string(),
                });
            }
            Section::Left(spec) => {
                if let Some(item) = line.strip_prefix("- ")
                    && let Some((rule, reason)) = item.split_once(": ")
                {
                    assert!(!reason.trim().is_empty(), "{rule}: no reason given");
                    doc.left_reasons
                        .entry(spec.clone())
                        .or_default()
                        .push(rule.trim().to_string());
                }
            }
        }
    }
    doc
}

fn document() -> Doc {
    parse(&read(&root().join("docs/conformance.md")))
}

/// Spec -> rules, in catalogue order.
fn catalogue() -> BTreeMap<String, Vec<String>> {
    let text = read(&root().join("docs/conformance-rules.tsv"));
    let mut rules: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let mut cols = line.split('\t');
        let spec = cols.next().expect("spec column");
        let rule = cols.next().expect("rule column");
        rules
            .entry(spec.to_string())
            .or_default()
            .push(rule.to_string());
    }
    rules
}

/// The source file of a citation path: `tern-broker/tests/publish.rs` is
/// `crates/tern-broker/src/tests/publish.rs`, `tern/tests/malformed.rs` is
/// `crates/tern/tests/malformed.rs`.
fn source(cited: &str) -> PathBuf {
    let (krate, rest) = cited
        .split_once('/')
        .unwrap_or_else(|| panic!("citation without a crate: {cited}"));
    let crates = root().join("crates").join(krate);
    let in_src = crates.join("src").join(rest);
    if in_src.is_file() {
        return in_src;
    }
    let direct = crates.join(rest);
    assert!(direct.is_file(), "cited file not found: {cited}");
    direct
}

/// The `(path, test name, optional row label)` citations of a Proved-by cell.
fn citations(cell: &str) -> Vec<(String, String, Option<String>)> {
    cell.split("<br>")
        .filter_map(|item| {
            let (path, rest) = item.trim().split_once("::")?;
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            let row = rest
                .split_once("(row \"")
                .and_then(|(_, r)| r.split_once('"'))
                .map(|(label, _)| label.to_string());
            Some((path.trim().to_string(), name, row))
        })
        .collect()
}

#[test]
fn every_catalogue_rule_appears_exactly_once_per_spec() {
    let doc = document();
    let catalogue = catalogue();
    for spec in SPECS {
        let want = &catalogue[spec];
        let rows = doc
            .tables
            .get(spec)
            .unwrap_or_else(|| panic!("no table for MQTT {spec}"));
        let got: Vec<&str> = rows.iter().map(|r| r.rule.as_str()).collect();
        let mut seen = BTreeSet::new();
        for rule in &got {
            assert!(seen.insert(*rule), "MQTT {spec}: {rule} appears twice");
        }
        for rule in want {
            assert!(seen.contains(rule.as_str()), "MQTT {spec}: {rule} missing");
        }
        assert_eq!(got, *want, "MQTT {spec}: rows not in catalogue order");
    }
    assert_eq!(doc.tables.len(), SPECS.len(), "unexpected extra tables");
}

#[test]
fn every_cited_test_exists() {
    let doc = document();
    let mut files: BTreeMap<String, String> = BTreeMap::new();
    let mut count = 0;
    for (spec, rows) in &doc.tables {
        for row in rows {
            let cited = citations(&row.proved_by);
            if row.status == "tested" {
                assert!(
                    !cited.is_empty(),
                    "MQTT {spec} {}: tested by nothing",
                    row.rule
                );
            }
            for (path, name, label) in cited {
                let text = files
                    .entry(path.clone())
                    .or_insert_with(|| read(&source(&path)));
                assert!(
                    !name.is_empty() && text.contains(&format!("fn {name}(")),
                    "MQTT {spec} {}: no `fn {name}` in {path}",
                    row.rule
                );
                if let Some(label) = label {
                    assert!(
                        text.contains(&format!("\"{label}\"")),
                        "MQTT {spec} {}: no row \"{label}\" in {path}",
                        row.rule
                    );
                }
                count += 1;
            }
        }
    }
    assert!(count > 0, "no citations found");
}

#[test]
fn summary_counts_match_the_tables() {
    let doc = document();
    for spec in SPECS {
        let rows = &doc.tables[spec];
        let mut counts = [rows.len(), 0, 0, 0];
        for row in rows {
            let at = STATUSES
                .iter()
                .position(|s| *s == row.status)
                .unwrap_or_else(|| panic!("MQTT {spec} {}: bad status {:?}", row.rule, row.status));
            counts[at + 1] += 1;
        }
        assert_eq!(
            doc.summary.get(spec),
            Some(&counts),
            "MQTT {spec}: summary (total, tested, n/a, left)"
        );
    }
}

#[test]
fn every_left_rule_has_a_reason() {
    let doc = document();
    for spec in SPECS {
        let left: Vec<&str> = doc.tables[spec]
            .iter()
            .filter(|r| r.status == "left")
            .map(|r| r.rule.as_str())
            .collect();
        let reasons: Vec<&str> = doc
            .left_reasons
            .get(spec)
            .map(|v| v.iter().map(String::as_str).collect())
            .unwrap_or_default();
        assert_eq!(left, reasons, "MQTT {spec}: left rules and their reasons");
    }
}
