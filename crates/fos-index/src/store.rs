//! The cut-out store as a port: what search, the server and the indexer need
//! of a library, in ids and entries rather than row numbers, so that a
//! library can live in a `.fos` file ([`Library`], the first implementation)
//! or elsewhere (a database) behind the same calls.

use crate::format::Entry;
use crate::library::{top_k, Library};
use crate::{IndexError, LibraryWriter};

/// Search's aspect-ratio filter: a cut-out passes when its aspect ratio is
/// within a factor of the rectangle's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AspectFilter {
    /// The rectangle's width / height.
    pub box_aspect: f64,
    /// Kept when max(r, 1/r) < factor, r = cut-out aspect / box aspect.
    pub factor: f64,
}

impl AspectFilter {
    /// Whether a cut-out of `aspect` passes.
    pub fn keeps(&self, aspect: f32) -> bool {
        let r = aspect as f64 / self.box_aspect;
        r.max(1.0 / r) < self.factor
    }
}

/// One pattern of a pattern-level search.
#[derive(Clone, Debug, PartialEq)]
pub struct PatternHits {
    /// Pattern id.
    pub pattern: String,
    /// Cosine similarity of the query with the pattern's centroid.
    pub score: f32,
    /// Its best members, best first.
    pub members: Vec<(Entry, f32)>,
}

/// A library of cut-out embeddings.
pub trait Store: Send + Sync {
    /// Where it is (a path or a URL), for messages.
    fn location(&self) -> String;
    /// Fingerprint of the model that made the embeddings.
    fn model(&self) -> &str;
    /// Embedding dimension.
    fn dim(&self) -> usize;
    /// Number of cut-outs.
    fn len(&self) -> usize;
    /// No cut-outs.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Categories and their cut-out counts, by name.
    fn categories(&self) -> Vec<(String, usize)>;
    /// `Ok` when the category has cut-outs; otherwise an error that lists
    /// the categories there are.
    fn check_category(&self, category: &str) -> Result<(), IndexError>;
    /// A cut-out by id.
    fn get(&self, id: &str) -> Option<Entry>;
    /// Whether searches of `category` use an approximate index.
    fn approximate(&self, category: &str) -> bool;
    /// Whether the library has pattern centroids.
    fn has_patterns(&self) -> bool;
    /// The top-`k` cut-outs of a category by cosine similarity with `query`,
    /// best first, among those that pass `aspect`; `exact` forces the exact
    /// scan where the category has an approximate index.
    fn top_k(
        &self,
        category: &str,
        query: &[f32],
        k: usize,
        aspect: Option<AspectFilter>,
        exact: bool,
    ) -> Result<Vec<(Entry, f32)>, IndexError>;
    /// The top-`p` patterns of a category by their centroids' similarity with
    /// `query`, each with its top-`m` members.
    fn top_patterns(
        &self,
        category: &str,
        query: &[f32],
        p: usize,
        m: usize,
    ) -> Result<Vec<PatternHits>, IndexError>;
    /// Adds cut-outs (ids must be new; embeddings by `model`, row-major);
    /// returns the new size. All or nothing.
    fn add(
        &mut self,
        model: &str,
        entries: Vec<Entry>,
        embeddings: &[f32],
    ) -> Result<usize, IndexError>;
    /// Removes cut-outs by id (unknown ids: an error, nothing changed);
    /// returns the new size.
    fn remove(&mut self, ids: &[String]) -> Result<usize, IndexError>;
}

impl Store for Library {
    fn location(&self) -> String {
        self.path().display().to_string()
    }
    fn model(&self) -> &str {
        Library::model(self)
    }
    fn dim(&self) -> usize {
        Library::dim(self)
    }
    fn len(&self) -> usize {
        Library::len(self)
    }
    fn categories(&self) -> Vec<(String, usize)> {
        Library::categories(self)
    }
    fn check_category(&self, category: &str) -> Result<(), IndexError> {
        Library::check_category(self, category)
    }
    fn get(&self, id: &str) -> Option<Entry> {
        self.row_of(id).map(|r| self.entry(r).clone())
    }
    fn approximate(&self, category: &str) -> bool {
        self.ann_graphs(category) > 0
    }
    fn has_patterns(&self) -> bool {
        !self.patterns().is_empty()
    }
    fn top_k(
        &self,
        category: &str,
        query: &[f32],
        k: usize,
        aspect: Option<AspectFilter>,
        exact: bool,
    ) -> Result<Vec<(Entry, f32)>, IndexError> {
        let keep = |e: &Entry| aspect.is_none_or(|a| a.keeps(e.aspect));
        Ok(self
            .search_with(category, query, k, keep, exact)?
            .into_iter()
            .map(|(r, s)| (self.entry(r).clone(), s))
            .collect())
    }
    fn top_patterns(
        &self,
        category: &str,
        query: &[f32],
        p: usize,
        m: usize,
    ) -> Result<Vec<PatternHits>, IndexError> {
        let mut out = Vec::new();
        for (pi, score) in self.search_patterns(category, query, p)? {
            let members = self.pattern_members(pi);
            let scores = self.scores(query, members);
            let best = top_k(members.iter().copied().zip(scores).collect(), m);
            out.push(PatternHits {
                pattern: self.patterns()[pi].pattern.clone(),
                score,
                members: best
                    .into_iter()
                    .map(|(r, s)| (self.entry(r).clone(), s))
                    .collect(),
            });
        }
        Ok(out)
    }
    fn add(
        &mut self,
        model: &str,
        entries: Vec<Entry>,
        embeddings: &[f32],
    ) -> Result<usize, IndexError> {
        let path = self.path().to_owned();
        let n = LibraryWriter::lock(&path)?.add(model, entries, embeddings)?;
        *self = Library::open(&path)?;
        Ok(n)
    }
    fn remove(&mut self, ids: &[String]) -> Result<usize, IndexError> {
        let path = self.path().to_owned();
        let n = LibraryWriter::lock(&path)?.remove(ids)?;
        *self = Library::open(&path)?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Dtype;

    fn unit(v: &[f32]) -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect()
    }

    fn entry(id: &str, cat: &str, aspect: f32, pat: Option<&str>) -> Entry {
        Entry {
            id: id.into(),
            category: cat.into(),
            path: format!("/x/{id}.png"),
            aspect,
            pattern: pat.map(Into::into),
        }
    }

    #[test]
    fn the_file_library_as_a_store() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("lib.fos");
        let emb = [
            unit(&[1.0, 0.0, 0.0]),
            unit(&[0.9, 0.1, 0.0]),
            unit(&[0.0, 1.0, 0.0]),
            unit(&[0.0, 0.0, 1.0]),
        ]
        .concat();
        let entries = vec![
            entry("a", "person", 0.5, Some("p0")),
            entry("b", "person", 2.0, Some("p0")),
            entry("c", "person", 0.55, Some("p1")),
            entry("d", "dog", 1.0, None),
        ];
        LibraryWriter::lock(&p)
            .unwrap()
            .write("m1", 3, Dtype::F16, entries, &emb)
            .unwrap();
        let mut s: Box<dyn Store> = Box::new(Library::open(&p).unwrap());
        assert_eq!((s.model(), s.dim(), s.len()), ("m1", 3, 4));
        assert_eq!(
            s.categories(),
            vec![("dog".to_owned(), 1), ("person".to_owned(), 3)]
        );
        assert_eq!(s.get("c").unwrap().aspect, 0.55);
        assert!(s.get("zzz").is_none());
        assert!(s
            .check_category("cat")
            .unwrap_err()
            .to_string()
            .contains("person (3)"));
        assert!(!s.approximate("person") && s.has_patterns());
        let q = unit(&[1.0, 0.05, 0.0]);
        let all = s.top_k("person", &q, 3, None, false).unwrap();
        let ids: Vec<&str> = all.iter().map(|(e, _)| e.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
        // The aspect filter (box 0.5, factor 1.2) drops b (2.0).
        let f = AspectFilter {
            box_aspect: 0.5,
            factor: 1.2,
        };
        let kept = s.top_k("person", &q, 3, Some(f), false).unwrap();
        let ids: Vec<&str> = kept.iter().map(|(e, _)| e.id.as_str()).collect();
        assert_eq!(ids, ["a", "c"]);
        let pats = s
            .top_patterns("person", &unit(&[0.0, 1.0, 0.0]), 2, 1)
            .unwrap();
        assert_eq!(pats[0].pattern, "p1");
        assert_eq!(pats[0].members[0].0.id, "c");
        assert_eq!(pats[1].members.len(), 1);
        // Add and remove through the store: it sees its own writes.
        let n = s
            .add(
                "m1",
                vec![entry("e", "dog", 1.0, None)],
                &unit(&[0.0, 0.0, 1.0]),
            )
            .unwrap();
        assert_eq!((n, s.len()), (5, 5));
        assert!(s
            .add("m2", vec![entry("f", "dog", 1.0, None)], &[0.0, 0.0, 1.0])
            .is_err());
        assert_eq!(s.remove(&["a".into()]).unwrap(), 4);
        assert!(s.get("a").is_none());
        assert!(s.remove(&["zzz".into()]).is_err());
        assert_eq!(s.len(), 4);
        assert!(s.location().ends_with("lib.fos"));
    }
}
