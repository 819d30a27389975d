//! Query strings as LINSTOR clients send them (wire rule W8): repeated keys
//! for multiple values (`?nodes=a&nodes=b`), `limit`/`offset` paging where a
//! limit of 0 or less means "everything", and `props` filters of the form
//! `KEY` (must exist) or `KEY=VALUE` (exact match).

use crate::Props;

/// A parsed query string: every `key=value` pair in order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    /// Splits on `&`, each pair at its first `=`, and decodes `%XX` and
    /// `+` (as a space) with `form_urlencoded`; a malformed escape stays
    /// as it was, bytes that are not UTF-8 become U+FFFD.
    pub fn parse(raw: Option<&str>) -> Self {
        let pairs = form_urlencoded::parse(raw.unwrap_or("").as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
        Query { pairs }
    }

    /// All values of `key`, in order; empty values are dropped.
    pub fn all(&self, key: &str) -> Vec<String> {
        self.pairs.iter().filter(|(k, v)| k == key && !v.is_empty()).map(|(_, v)| v.clone()).collect()
    }

    /// The last value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// A boolean flag (`True`, `true`, `1`...); a present key without a
    /// value counts as true.
    pub fn flag(&self, key: &str) -> Result<bool, String> {
        match self.get(key) {
            None => Ok(false),
            Some("") => Ok(true),
            Some(v) => crate::lenient::parse_bool(v).ok_or_else(|| format!("query parameter '{key}' is not a boolean: '{v}'")),
        }
    }

    /// An integer parameter.
    pub fn int(&self, key: &str) -> Result<Option<i64>, String> {
        match self.get(key) {
            None | Some("") => Ok(None),
            Some(v) => v.trim().parse().map(Some).map_err(|_| format!("query parameter '{key}' is not an integer: '{v}'")),
        }
    }

    /// The `limit`/`offset` pair.
    pub fn page(&self) -> Result<Page, String> {
        Ok(Page { limit: self.int("limit")?.unwrap_or(0), offset: self.int("offset")?.unwrap_or(0) })
    }

    /// The `props` filters.
    pub fn props_filter(&self) -> PropsFilter {
        PropsFilter::new(&self.all("props"))
    }
}

/// Paging: applied after filtering, and only when `limit > 0`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Page {
    pub limit: i64,
    pub offset: i64,
}

impl Page {
    pub fn apply<T>(&self, items: Vec<T>) -> Vec<T> {
        self.window(items.into_iter()).collect()
    }

    /// The page of an iterator (all of it without a limit).
    pub fn window<I: Iterator>(&self, items: I) -> impl Iterator<Item = I::Item> {
        let (offset, limit) = if self.limit <= 0 {
            (0, usize::MAX)
        } else {
            (usize::try_from(self.offset.max(0)).unwrap_or(usize::MAX), usize::try_from(self.limit).unwrap_or(usize::MAX))
        };
        items.skip(offset).take(limit)
    }
}

/// `props=KEY` / `props=KEY=VALUE` filters, all of which must match.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PropsFilter {
    terms: Vec<(String, Option<String>)>,
}

impl PropsFilter {
    /// No term: every object matches.
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    pub fn new(raw: &[String]) -> Self {
        let terms = raw
            .iter()
            .map(|t| match t.split_once('=') {
                Some((k, v)) => (k.to_string(), Some(v.to_string())),
                None => (t.clone(), None),
            })
            .collect();
        PropsFilter { terms }
    }

    pub fn matches(&self, props: &Props) -> bool {
        self.terms.iter().all(|(k, v)| match (props.get(k), v) {
            (Some(_), None) => true,
            (Some(have), Some(want)) => have == want,
            (None, _) => false,
        })
    }
}

/// A case-insensitive name filter (`nodes`, `resources`, ...); empty
/// matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NameFilter {
    upper: Vec<String>,
}

impl NameFilter {
    pub fn new(names: &[String]) -> Self {
        NameFilter { upper: names.iter().map(|n| n.to_ascii_uppercase()).collect() }
    }

    pub fn matches(&self, name: &str) -> bool {
        self.upper.is_empty() || self.upper.iter().any(|n| n.eq_ignore_ascii_case(name))
    }

    pub fn is_empty(&self) -> bool {
        self.upper.is_empty()
    }

    /// The names asked for, upper-cased (the controller's keys).
    pub fn names(&self) -> &[String] {
        &self.upper
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_keys_give_every_value() {
        let q = Query::parse(Some("nodes=a&nodes=b&limit=0&offset=0&cached=true"));
        assert_eq!(q.all("nodes"), vec!["a", "b"]);
        assert_eq!(q.page().unwrap(), Page { limit: 0, offset: 0 });
        assert!(q.flag("cached").unwrap());
        assert!(!q.flag("missing").unwrap());
    }

    #[test]
    fn percent_escapes_and_plus_are_decoded() {
        let q = Query::parse(Some("props=Aux%2Fsite%3Dbox+1&x=%zz"));
        assert_eq!(q.all("props"), vec!["Aux/site=box 1"]);
        assert_eq!(q.get("x"), Some("%zz"));
        let q = Query::parse(Some("&nodes=a%20b&&nodes&nodes=%E2%82%AC&k=v=w&bad=%FF"));
        assert_eq!(q.all("nodes"), vec!["a b", "€"], "empty segments and empty values are dropped");
        assert_eq!(q.get("nodes"), Some("€"));
        assert_eq!(q.get("k"), Some("v=w"), "split at the first '='");
        assert_eq!(q.get("bad"), Some("\u{fffd}"));
        assert_eq!(Query::parse(None), Query::default());
    }

    #[test]
    fn booleans_in_any_case() {
        let q = Query::parse(Some("keep_tiebreaker=True&b=FALSE&c=nope"));
        assert!(q.flag("keep_tiebreaker").unwrap());
        assert!(!q.flag("b").unwrap());
        assert!(q.flag("c").is_err());
    }

    #[test]
    fn paging_applies_only_with_positive_limit() {
        let v: Vec<i32> = (0..10).collect();
        assert_eq!(Page { limit: 0, offset: 5 }.apply(v.clone()).len(), 10);
        assert_eq!(Page { limit: -1, offset: 5 }.apply(v.clone()).len(), 10);
        assert_eq!(Page { limit: 3, offset: 5 }.apply(v.clone()), vec![5, 6, 7]);
        assert_eq!(Page { limit: 3, offset: 20 }.apply(v), Vec::<i32>::new());
    }

    #[test]
    fn props_filter_key_and_key_value() {
        let mut p = Props::new();
        p.insert("Aux/site".into(), "a".into());
        assert!(PropsFilter::new(&["Aux/site".into()]).matches(&p));
        assert!(PropsFilter::new(&["Aux/site=a".into()]).matches(&p));
        assert!(!PropsFilter::new(&["Aux/site=b".into()]).matches(&p));
        assert!(!PropsFilter::new(&["Aux/site".into(), "Aux/rack".into()]).matches(&p));
        assert!(PropsFilter::new(&[]).matches(&p));
    }

    #[test]
    fn name_filter_is_case_insensitive() {
        let f = NameFilter::new(&["Alpha".into()]);
        assert!(f.matches("ALPHA"));
        assert!(!f.matches("beta"));
        assert!(NameFilter::new(&[]).matches("anything"));
    }
}
