//! Patterns: groups of interchangeable foregrounds (method.md, method A).
//!
//! From labels, a pattern is the tuple of a cut-out's attribute values, as in
//! the paper. Without labels, the cut-outs of each category are clustered with
//! k-means on appearance features (supplied by the caller, e.g. a pretrained
//! backbone) joined with geometry: log aspect ratio and the photo sides the
//! object touches.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::manifest::{write_dataset, Dataset, Record};
use crate::DataError;

/// Pattern ids from an attribute CSV: a header `id,ATTR1,ATTR2,...` and one
/// row per cut-out. Returns id -> pattern (`category|v1|v2|...`). Unknown ids
/// and short rows are errors naming the line.
pub fn from_labels(records: &[Record], csv: &str) -> Result<HashMap<String, String>, DataError> {
    let cat: HashMap<&str, &str> = records
        .iter()
        .map(|r| (r.id.as_str(), r.category.as_str()))
        .collect();
    let mut lines = csv
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let (_, header) = lines
        .next()
        .ok_or_else(|| DataError::Format("labels CSV is empty".into()))?;
    let header = split_csv(header);
    if header.first().map(|h| h.trim()) != Some("id") || header.len() < 2 {
        return Err(DataError::Format(
            "labels CSV must start with a header `id,ATTRIBUTE,...`".into(),
        ));
    }
    let mut out = HashMap::new();
    for (n, line) in lines {
        let f = split_csv(line);
        let bad = |m: String| DataError::Format(format!("labels CSV line {}: {m}", n + 1));
        if f.len() != header.len() {
            return Err(bad(format!(
                "{} fields, the header has {}",
                f.len(),
                header.len()
            )));
        }
        let id = f[0].trim();
        let c = cat
            .get(id)
            .ok_or_else(|| bad(format!("id {id:?} is not in the data set")))?;
        let values: Vec<&str> = f[1..].iter().map(|v| v.trim()).collect();
        out.insert(id.to_owned(), format!("{c}|{}", values.join("|")));
    }
    Ok(out)
}

fn split_csv(line: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                out.last_mut().expect("non-empty").push('"');
            }
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(String::new()),
            c => out.last_mut().expect("non-empty").push(c),
        }
    }
    out
}

/// The documented default number of patterns for `n` cut-outs of a category:
/// round(sqrt(n / 2)), at least 1 (about sqrt(2n) members per pattern: 10
/// patterns for 200 cut-outs, 28 for 1,600).
pub fn auto_k(n: usize) -> usize {
    ((n as f64 / 2.0).sqrt().round() as usize).clamp(1, n.max(1))
}

/// Geometry features of a record: log aspect ratio and four truncation flags,
/// scaled by `weight`.
pub fn geometry(r: &Record, weight: f32) -> Vec<f32> {
    let mut v = vec![(r.aspect() as f32).ln() * weight];
    for side in ["left", "top", "right", "bottom"] {
        v.push(if r.truncated.iter().any(|s| s == side) {
            weight
        } else {
            0.0
        });
    }
    v
}

/// k-means (k-means++ seeding, Lloyd iterations) of `points`; returns a cluster
/// index per point, clusters renumbered by first appearance. Deterministic
/// under `seed`.
pub fn kmeans(points: &[Vec<f32>], k: usize, seed: u64) -> Vec<usize> {
    let n = points.len();
    if n == 0 {
        return vec![];
    }
    let k = k.clamp(1, n);
    let d2 = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f32>();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut centres: Vec<Vec<f32>> = vec![points[rng.random_range(0..n)].clone()];
    let mut best: Vec<f32> = points.iter().map(|p| d2(p, &centres[0])).collect();
    while centres.len() < k {
        let total: f64 = best.iter().map(|&v| v as f64).sum();
        let next = if total <= 0.0 {
            rng.random_range(0..n)
        } else {
            let mut t = rng.random::<f64>() * total;
            let mut pick = n - 1;
            for (i, &v) in best.iter().enumerate() {
                t -= v as f64;
                if t <= 0.0 {
                    pick = i;
                    break;
                }
            }
            pick
        };
        centres.push(points[next].clone());
        let c = centres.last().expect("pushed");
        for (b, p) in best.iter_mut().zip(points) {
            *b = b.min(d2(p, c));
        }
    }
    let mut assign = vec![0usize; n];
    for _ in 0..100 {
        let mut changed = false;
        for (i, p) in points.iter().enumerate() {
            let (mut bi, mut bd) = (0, f32::INFINITY);
            for (j, c) in centres.iter().enumerate() {
                let d = d2(p, c);
                if d < bd {
                    (bi, bd) = (j, d);
                }
            }
            if assign[i] != bi {
                assign[i] = bi;
                changed = true;
            }
        }
        let dim = points[0].len();
        let mut sums = vec![vec![0f32; dim]; k];
        let mut counts = vec![0usize; k];
        for (p, &a) in points.iter().zip(&assign) {
            counts[a] += 1;
            sums[a].iter_mut().zip(p).for_each(|(s, v)| *s += v);
        }
        for j in 0..k {
            if counts[j] > 0 {
                centres[j] = sums[j].iter().map(|s| s / counts[j] as f32).collect();
            }
        }
        if !changed {
            break;
        }
    }
    let mut renum: HashMap<usize, usize> = HashMap::new();
    assign
        .into_iter()
        .map(|a| {
            let next = renum.len();
            *renum.entry(a).or_insert(next)
        })
        .collect()
}

/// Clusters each category's records: `features[i]` belongs to `records[i]`.
/// `k` fixes the number of patterns per category (clamped to its size); `None`
/// uses [`auto_k`]. Returns id -> pattern (`category/pNN`) and the k used per
/// category.
pub fn cluster(
    records: &[&Record],
    features: &[Vec<f32>],
    k: Option<usize>,
    seed: u64,
) -> (HashMap<String, String>, BTreeMap<String, usize>) {
    let mut by_cat: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, r) in records.iter().enumerate() {
        by_cat.entry(r.category.as_str()).or_default().push(i);
    }
    let mut out = HashMap::new();
    let mut ks = BTreeMap::new();
    for (cat, idx) in by_cat {
        let kk = k.unwrap_or_else(|| auto_k(idx.len())).clamp(1, idx.len());
        let pts: Vec<Vec<f32>> = idx.iter().map(|&i| features[i].clone()).collect();
        let a = kmeans(&pts, kk, seed);
        for (&i, c) in idx.iter().zip(a) {
            out.insert(records[i].id.clone(), format!("{cat}/p{c:02}"));
        }
        ks.insert(cat.to_owned(), kk);
    }
    (out, ks)
}

/// Writes pattern ids into the data set's manifest (records not in `patterns`
/// get none) and records `method` in `dataset.json`; both files atomically.
pub fn write_patterns(
    ds: &mut Dataset,
    patterns: &HashMap<String, String>,
    method: serde_json::Value,
) -> Result<(), DataError> {
    for r in &mut ds.records {
        r.pattern = patterns.get(&r.id).cloned();
    }
    ds.info.patterns = Some(method);
    write_dataset(&ds.root, &ds.info, &ds.records)
}

/// Reads a labels CSV file.
pub fn read_labels(path: &Path, records: &[Record]) -> Result<HashMap<String, String>, DataError> {
    let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
    from_labels(records, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, cat: &str) -> Record {
        Record {
            id: id.into(),
            category: cat.into(),
            source_image: None,
            image_size: None,
            bbox: Some([0, 0, 10, 20]),
            split: "train".into(),
            pattern: None,
            foreground: format!("fg/{id}.png"),
            mask: format!("mask/{id}.png"),
            background: None,
            hole: None,
            area: 100,
            fg_size: None,
            truncated: vec![],
        }
    }

    #[test]
    fn labels_make_tuples() {
        let recs = vec![rec("a", "person"), rec("b", "person")];
        let p = from_labels(
            &recs,
            "id,orientation,sport\na,front,\"ski, alpine\"\nb,back,none\n",
        )
        .unwrap();
        assert_eq!(p["a"], "person|front|ski, alpine");
        assert_eq!(p["b"], "person|back|none");
        assert!(from_labels(&recs, "id,o\nzzz,front\n").is_err());
        assert!(from_labels(&recs, "id,o\na,front,extra\n").is_err());
        assert!(from_labels(&recs, "name,o\n").is_err());
    }

    #[test]
    fn kmeans_separates_clear_clusters() {
        let mut pts = Vec::new();
        for i in 0..10 {
            pts.push(vec![i as f32 * 0.01, 0.0]);
            pts.push(vec![10.0 + i as f32 * 0.01, 5.0]);
        }
        let a = kmeans(&pts, 2, 1);
        for i in 0..10 {
            assert_eq!(a[2 * i], a[0]);
            assert_eq!(a[2 * i + 1], a[1]);
        }
        assert_ne!(a[0], a[1]);
        assert_eq!(a, kmeans(&pts, 2, 1));
        assert_eq!(auto_k(200), 10);
        assert_eq!(auto_k(1), 1);
        assert_eq!(kmeans(&pts, 50, 0).iter().max(), Some(&19));
    }
}
