//! Scores as data: what every method gives every candidate of every query,
//! read from and written to one CSV format, so that fos evaluates any model's
//! scores and any tool (the released FOSD evaluator included) can recompute
//! fos's figures.
//!
//! The format, one row per (query, candidate), with a header:
//!
//! ```text
//! category,query,candidate,score,label,valid,method
//! person,bg-001,fg-017,0.8125,1,1,student
//! ```
//!
//! `category`, `query`, `candidate`, `score` and `label` are required; `label`
//! is 1 for a positive, 0 otherwise (S-FOSD: exactly one positive a query).
//! `valid` (0/1, default 1) is the outcome of R-FOSD's aspect rule; S-FOSD
//! does not use it. `method` (optional) names the method, so that one file
//! holds several. Columns may come in any order. A candidate's rows keep
//! the order they are given in, which breaks ties of equal scores.
//! `score` may be `-inf` (a candidate the method did not return).

use std::collections::HashMap;
use std::path::Path;

use crate::metrics::Suite;
use crate::EvalError;

/// One candidate of a query.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    /// Cut-out id.
    pub id: String,
    /// The method's score (higher = better fit).
    pub score: f32,
    /// A positive (compatible) cut-out.
    pub label: bool,
    /// Passes R-FOSD's aspect rule.
    pub valid: bool,
}

/// A query and its scored candidates.
#[derive(Clone, Debug, PartialEq)]
pub struct QueryScores {
    /// Category.
    pub category: String,
    /// Query id (the background).
    pub query: String,
    /// Candidates, in the order given.
    pub candidates: Vec<Candidate>,
}

/// One method's scores over a test set.
#[derive(Clone, Debug, PartialEq)]
pub struct MethodScores {
    /// Method name.
    pub name: String,
    /// Queries, in the order given.
    pub queries: Vec<QueryScores>,
}

const REQUIRED: [&str; 5] = ["category", "query", "candidate", "score", "label"];
const OPTIONAL: [&str; 2] = ["valid", "method"];

/// The CSV text of `methods` (every column, header first).
pub fn to_csv(methods: &[MethodScores]) -> String {
    let mut w = csv::Writer::from_writer(Vec::new());
    let bit = |b: bool| if b { "1" } else { "0" };
    w.write_record([
        "category",
        "query",
        "candidate",
        "score",
        "label",
        "valid",
        "method",
    ])
    .expect("in memory");
    for m in methods {
        for q in &m.queries {
            for c in &q.candidates {
                w.write_record([
                    q.category.as_str(),
                    q.query.as_str(),
                    c.id.as_str(),
                    &c.score.to_string(),
                    bit(c.label),
                    bit(c.valid),
                    m.name.as_str(),
                ])
                .expect("in memory");
            }
        }
    }
    String::from_utf8(w.into_inner().expect("in memory")).expect("UTF-8 fields")
}

/// Writes `methods` to `path` (atomically).
pub fn write_csv(methods: &[MethodScores], path: &Path) -> Result<(), EvalError> {
    fos_image::atomic::write_atomic(path, to_csv(methods).as_bytes()).map_err(|source| {
        EvalError::Io {
            path: path.to_owned(),
            source,
        }
    })
}

/// Reads a scores file; `name` names the method when the file has no
/// `method` column. Under [`Suite::Sfosd`] every query must have exactly one
/// positive.
pub fn read_csv(path: &Path, name: &str, suite: Suite) -> Result<Vec<MethodScores>, EvalError> {
    let bytes = std::fs::read(path).map_err(|source| EvalError::Io {
        path: path.to_owned(),
        source,
    })?;
    parse_csv(&bytes, name, suite).map_err(|e| match e {
        EvalError::Scores { line, message, .. } => EvalError::Scores {
            file: path.display().to_string(),
            line,
            message,
        },
        e => e,
    })
}

/// [`read_csv`] on bytes (errors name the file as `-`).
pub fn parse_csv(bytes: &[u8], name: &str, suite: Suite) -> Result<Vec<MethodScores>, EvalError> {
    let err = |line: u64, message: String| EvalError::Scores {
        file: "-".into(),
        line,
        message,
    };
    let mut rd = csv::ReaderBuilder::new()
        .has_headers(true)
        .trim(csv::Trim::All)
        .from_reader(bytes);
    let header = rd
        .headers()
        .map_err(|e| err(1, format!("unreadable header: {e}")))?
        .clone();
    let mut col: HashMap<&str, usize> = HashMap::new();
    for (i, h) in header.iter().enumerate() {
        let known = REQUIRED.iter().chain(&OPTIONAL).find(|&&k| k == h);
        let Some(&k) = known else {
            return Err(err(
                1,
                format!(
                    "column {} is {h:?}; the columns are {} and optionally {}",
                    i + 1,
                    REQUIRED.join(","),
                    OPTIONAL.join(",")
                ),
            ));
        };
        if col.insert(k, i).is_some() {
            return Err(err(1, format!("column {} repeats {h:?}", i + 1)));
        }
    }
    if let Some(m) = REQUIRED.iter().find(|k| !col.contains_key(*k)) {
        return Err(err(
            1,
            format!(
                "no {m:?} column; the header must name {}",
                REQUIRED.join(",")
            ),
        ));
    }
    // (method, category, query) -> (method index, query index, first line).
    let mut methods: Vec<MethodScores> = Vec::new();
    let mut method_ix: HashMap<String, usize> = HashMap::new();
    let mut query_ix: HashMap<(usize, String, String), (usize, u64)> = HashMap::new();
    let mut seen: HashMap<(usize, usize, String), u64> = HashMap::new();
    let mut rec = csv::StringRecord::new();
    loop {
        let more = rd.read_record(&mut rec).map_err(|e| {
            let line = e.position().map_or(0, |p| p.line());
            match e.kind() {
                csv::ErrorKind::UnequalLengths {
                    expected_len, len, ..
                } => err(line, format!("{len} fields, the header has {expected_len}")),
                _ => err(line, e.to_string()),
            }
        })?;
        if !more {
            break;
        }
        let line = rec.position().map_or(0, |p| p.line());
        let field = |k: &str| rec.get(col[k]).unwrap_or("");
        let text = |k: &str| {
            let v = field(k);
            if v.is_empty() {
                Err(err(line, format!("column {} ({k}) is empty", col[k] + 1)))
            } else {
                Ok(v.to_owned())
            }
        };
        let bit = |k: &str| match field(k) {
            "1" => Ok(true),
            "0" => Ok(false),
            v => Err(err(
                line,
                format!("column {} ({k}): {v:?} is not 0 or 1", col[k] + 1),
            )),
        };
        let category = text("category")?;
        let query = text("query")?;
        let id = text("candidate")?;
        let score: f32 = field("score").parse().map_err(|_| {
            err(
                line,
                format!(
                    "column {} (score): {:?} is not a number",
                    col["score"] + 1,
                    field("score")
                ),
            )
        })?;
        if score.is_nan() {
            return Err(err(
                line,
                format!("column {} (score) is NaN", col["score"] + 1),
            ));
        }
        let label = bit("label")?;
        let valid = if col.contains_key("valid") {
            bit("valid")?
        } else {
            true
        };
        let method = if col.contains_key("method") {
            text("method")?
        } else {
            name.to_owned()
        };
        let m = *method_ix.entry(method.clone()).or_insert_with(|| {
            methods.push(MethodScores {
                name: method,
                queries: Vec::new(),
            });
            methods.len() - 1
        });
        let key = (m, category.clone(), query.clone());
        let (qi, _) = *query_ix.entry(key).or_insert_with(|| {
            methods[m].queries.push(QueryScores {
                category,
                query,
                candidates: Vec::new(),
            });
            (methods[m].queries.len() - 1, line)
        });
        if let Some(first) = seen.insert((m, qi, id.clone()), line) {
            return Err(err(
                line,
                format!("candidate {id:?} of this query was already given on line {first}"),
            ));
        }
        methods[m].queries[qi].candidates.push(Candidate {
            id,
            score,
            label,
            valid,
        });
    }
    if methods.is_empty() {
        return Err(err(1, "no rows after the header".into()));
    }
    if suite == Suite::Sfosd {
        for ((m, cat, q), (qi, line)) in &query_ix {
            let n = methods[*m].queries[*qi]
                .candidates
                .iter()
                .filter(|c| c.label)
                .count();
            if n != 1 {
                return Err(err(
                    *line,
                    format!(
                        "query {q:?} of category {cat:?} ({}) has {n} positives; S-FOSD needs exactly one (its own cut-out)",
                        methods[*m].name
                    ),
                ));
            }
        }
    }
    Ok(methods)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str, suite: Suite) -> Result<Vec<MethodScores>, String> {
        parse_csv(s.as_bytes(), "mine", suite).map_err(|e| e.to_string())
    }

    #[test]
    fn reads_what_it_writes() {
        let csv = "category,query,candidate,score,label\n\
                   dog,b1,f1,0.5,1\ndog,b1,f2,-inf,0\ncat,b2,f3,0.25,1\n";
        let m = parse(csv, Suite::Sfosd).unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].name, "mine");
        assert_eq!(m[0].queries.len(), 2);
        assert_eq!(m[0].queries[0].candidates[1].score, f32::NEG_INFINITY);
        assert!(m[0].queries[0].candidates.iter().all(|c| c.valid));
        let again = parse(&to_csv(&m), Suite::Sfosd).unwrap();
        assert_eq!(again, m);
    }

    #[test]
    fn columns_in_any_order_and_several_methods() {
        let csv = "label,score,candidate,query,category,method,valid\n\
                   1,0.1,f1,b1,dog,a,0\n0,0.2,f2,b1,dog,a,1\n1,0.3,f1,b1,dog,b,1\n";
        let m = parse(csv, Suite::Rfosd).unwrap();
        assert_eq!(m.len(), 2);
        assert!(!m[0].queries[0].candidates[0].valid);
        assert_eq!(m[1].name, "b");
    }

    #[test]
    fn bad_files_name_the_line_and_column() {
        let h = "category,query,candidate,score,label\n";
        let e = parse(&format!("{h}dog,b1,f1,abc,1\n"), Suite::Rfosd).unwrap_err();
        assert!(
            e.contains("line 2") && e.contains("column 4 (score)"),
            "{e}"
        );
        let e = parse(
            &format!("{h}dog,b1,f1,0.5,1\ndog,b1,f2,0.5,2\n"),
            Suite::Rfosd,
        )
        .unwrap_err();
        assert!(
            e.contains("line 3") && e.contains("column 5 (label)"),
            "{e}"
        );
        let e = parse(&format!("{h}dog,b1,f1,0.5\n"), Suite::Rfosd).unwrap_err();
        assert!(e.contains("line 2") && e.contains("4 fields"), "{e}");
        let e = parse("category,query,score,label\n", Suite::Rfosd).unwrap_err();
        assert!(e.contains("line 1") && e.contains("candidate"), "{e}");
        let e = parse(h, Suite::Rfosd).unwrap_err();
        assert!(e.contains("no rows"), "{e}");
        let e = parse(&format!("{h}dog,b1,f1,NaN,1\n"), Suite::Rfosd).unwrap_err();
        assert!(e.contains("NaN"), "{e}");
        let e = parse(
            &format!("{h}dog,b1,f1,0.5,1\ndog,b1,f1,0.4,0\n"),
            Suite::Rfosd,
        )
        .unwrap_err();
        assert!(e.contains("line 3") && e.contains("line 2"), "{e}");
        let e = parse("category,query,candidate,score,label,extra\n", Suite::Rfosd).unwrap_err();
        assert!(e.contains("column 6"), "{e}");
        // S-FOSD: exactly one positive per query.
        let e = parse(
            &format!("{h}dog,b1,f1,0.5,0\ndog,b1,f2,0.4,0\n"),
            Suite::Sfosd,
        )
        .unwrap_err();
        assert!(e.contains("line 2") && e.contains("0 positives"), "{e}");
        assert!(parse(&format!("{h}dog,b1,f1,0.5,0\n"), Suite::Rfosd).is_ok());
    }
}
