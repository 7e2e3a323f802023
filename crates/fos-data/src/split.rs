//! Train/val/test splits by source photo, deterministic under a seed.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::DataError;

/// Named fractions, e.g. `train=0.7,val=0.15,test=0.15`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SplitSpec(pub Vec<(String, f64)>);

impl Default for SplitSpec {
    fn default() -> Self {
        SplitSpec(vec![
            ("train".into(), 0.7),
            ("val".into(), 0.15),
            ("test".into(), 0.15),
        ])
    }
}

impl std::str::FromStr for SplitSpec {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Self, DataError> {
        let bad = |m: String| DataError::Config(format!("--splits {s:?}: {m}"));
        let mut parts = Vec::new();
        for item in s.split(',').filter(|p| !p.trim().is_empty()) {
            let (name, frac) = item
                .split_once('=')
                .ok_or_else(|| bad(format!("{item:?} is not NAME=FRACTION")))?;
            let name = name.trim();
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(bad(format!(
                    "split name {name:?} must be letters, digits, - or _"
                )));
            }
            let f: f64 = frac
                .trim()
                .parse()
                .map_err(|_| bad(format!("{frac:?} is not a number")))?;
            if !(f.is_finite() && f >= 0.0) {
                return Err(bad(format!("fraction {f} must be >= 0")));
            }
            if parts.iter().any(|(n, _): &(String, f64)| n == name) {
                return Err(bad(format!("split {name:?} named twice")));
            }
            parts.push((name.to_owned(), f));
        }
        let total: f64 = parts.iter().map(|p| p.1).sum();
        if parts.is_empty() || total <= 0.0 {
            return Err(bad("no split with a positive fraction".into()));
        }
        if (total - 1.0).abs() > 1e-6 {
            return Err(bad(format!("fractions sum to {total}, not 1")));
        }
        Ok(SplitSpec(parts))
    }
}

impl SplitSpec {
    /// Assigns each key (a source photo) a split: the keys are sorted, shuffled
    /// with `seed`, and cut by cumulative fraction. Returns split names in the
    /// order of `keys`.
    pub fn assign(&self, keys: &[String], seed: u64) -> Vec<String> {
        let mut order: Vec<usize> = (0..keys.len()).collect();
        order.sort_by(|&a, &b| keys[a].cmp(&keys[b]));
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        let n = keys.len() as f64;
        let mut out = vec![String::new(); keys.len()];
        let mut cum = 0.0;
        let mut start = 0usize;
        for (k, (name, f)) in self.0.iter().enumerate() {
            cum += f;
            let end = if k + 1 == self.0.len() {
                keys.len()
            } else {
                (cum * n).round() as usize
            };
            for &i in &order[start..end.max(start)] {
                out[i] = name.clone();
            }
            start = end.max(start);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let s: SplitSpec = "train=0.8,test=0.2".parse().unwrap();
        assert_eq!(s.0.len(), 2);
        assert!("test=1".parse::<SplitSpec>().is_ok());
        for bad in [
            "train=0.5",
            "train",
            "a=x",
            "a=-1,b=2",
            "a=0.5,a=0.5",
            "../x=1",
            "",
        ] {
            assert!(bad.parse::<SplitSpec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn assignment_is_deterministic_and_proportional() {
        let keys: Vec<String> = (0..200).map(|i| format!("photo{i}")).collect();
        let s = SplitSpec::default();
        let a = s.assign(&keys, 7);
        assert_eq!(a, s.assign(&keys, 7));
        assert_ne!(a, s.assign(&keys, 8));
        let count = |n: &str| a.iter().filter(|x| *x == n).count();
        assert_eq!((count("train"), count("val"), count("test")), (140, 30, 30));
        // Independent of input order.
        let mut rev = keys.clone();
        rev.reverse();
        let b = s.assign(&rev, 7);
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(a[i], b[199 - i], "{k}");
        }
    }
}
