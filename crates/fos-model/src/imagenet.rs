//! ImageNet-1k class names (ILSVRC-2012 synset order, as in
//! `shared/data/imagenet/classes.txt`, embedded in the binary) and top-k.

use serde::Serialize;

static CLASSES: &str = include_str!("../data/imagenet_classes.txt");

/// The full name line of class `index` (all synonyms, comma-separated).
pub fn class_line(index: usize) -> Option<&'static str> {
    CLASSES.lines().nth(index)
}

/// The short name of class `index`: the first name before the comma.
pub fn class_name(index: usize) -> Option<&'static str> {
    class_line(index).map(|l| l.split(',').next().unwrap_or(l).trim())
}

/// One entry of a top-k list.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prediction {
    /// Class index (0..1000).
    pub index: usize,
    /// Short class name.
    pub name: String,
    /// Softmax probability.
    pub prob: f32,
}

/// Softmax over `logits`, then the `k` most probable classes, best first.
pub fn top_k(logits: &[f32], k: usize) -> Vec<Prediction> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f64> = logits.iter().map(|&l| f64::from(l - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    idx.sort_by(|&a, &b| exps[b].total_cmp(&exps[a]).then(a.cmp(&b)));
    idx.into_iter()
        .take(k)
        .map(|i| Prediction {
            index: i,
            name: class_name(i).unwrap_or("?").to_owned(),
            prob: (exps[i] / sum) as f32,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(CLASSES.lines().count(), 1000);
        assert_eq!(class_name(0), Some("tench"));
        assert_eq!(class_name(294), Some("brown bear"));
        assert_eq!(class_name(340), Some("zebra"));
        assert_eq!(class_name(1000), None);
    }

    #[test]
    fn embedded_list_equals_the_shared_one() {
        let p = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/data/imagenet/classes.txt"
        );
        match std::fs::read_to_string(p) {
            Ok(s) => assert_eq!(s.trim_end(), CLASSES.trim_end()),
            Err(_) => eprintln!("skipped: {p} absent (../shared not beside the checkout)"),
        }
    }

    #[test]
    fn softmax_top_k() {
        let mut l = vec![0f32; 1000];
        l[5] = 2.0;
        l[7] = 1.0;
        let t = top_k(&l, 3);
        assert_eq!(t[0].index, 5);
        assert_eq!(t[1].index, 7);
        let z = 998.0 + 1f64.exp() + 2f64.exp();
        assert!((f64::from(t[0].prob) - 2f64.exp() / z).abs() < 1e-6);
        assert_eq!(t[2].index, 0, "ties broken by index");
    }
}
