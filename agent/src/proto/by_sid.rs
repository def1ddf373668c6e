//! A per-session table: `(session id, value)` pairs in a vector, found by a scan.
//!
//! Every table of the executors is keyed by session id and bounded by the device's caps (1,024
//! control sessions, far fewer with a shell, a transfer or a handler), so a scan costs less than
//! hashing the id, and each `HashMap` type would link its own copy of the hash table's code
//! (about 1.2 KB each in the static binary).

/// Values of type `V` by session id; order is not kept.
#[derive(Debug)]
pub(crate) struct BySid<V>(Vec<(String, V)>);

impl<V> Default for BySid<V> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<V> BySid<V> {
    fn position(&self, sid: &str) -> Option<usize> {
        self.0.iter().position(|(s, _)| s == sid)
    }

    pub(crate) fn get(&self, sid: &str) -> Option<&V> {
        self.position(sid).map(|i| &self.0[i].1)
    }

    pub(crate) fn get_mut(&mut self, sid: &str) -> Option<&mut V> {
        let i = self.position(sid)?;
        Some(&mut self.0[i].1)
    }

    pub(crate) fn contains_key(&self, sid: &str) -> bool {
        self.position(sid).is_some()
    }

    /// Sets `sid`'s value; returns the one it replaces.
    pub(crate) fn insert(&mut self, sid: String, v: V) -> Option<V> {
        match self.position(&sid) {
            Some(i) => Some(std::mem::replace(&mut self.0[i].1, v)),
            None => {
                self.0.push((sid, v));
                None
            }
        }
    }

    /// `sid`'s value, made with `make` if there is none.
    pub(crate) fn get_or_insert_with(&mut self, sid: &str, make: impl FnOnce() -> V) -> &mut V {
        let i = match self.position(sid) {
            Some(i) => i,
            None => {
                self.0.push((sid.to_owned(), make()));
                self.0.len() - 1
            }
        };
        &mut self.0[i].1
    }

    pub(crate) fn remove(&mut self, sid: &str) -> Option<V> {
        self.position(sid).map(|i| self.0.swap_remove(i).1)
    }

    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&str, &mut V) -> bool) {
        self.0.retain_mut(|(s, v)| keep(s, v));
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &V)> {
        self.0.iter().map(|(s, v)| (s.as_str(), v))
    }

    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = (&str, &mut V)> {
        self.0.iter_mut().map(|(s, v)| (s.as_str(), &mut *v))
    }

    /// Empties the table, handing out what it held.
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = (String, V)> + '_ {
        self.0.drain(..)
    }

    pub(crate) fn clear(&mut self) {
        self.0.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_has_one_value() {
        let mut m = BySid::default();
        assert_eq!(m.insert("a".into(), 1), None);
        assert_eq!(m.insert("b".into(), 2), None);
        assert_eq!(m.insert("a".into(), 3), Some(1));
        assert_eq!((m.iter().count(), m.get("a"), m.get("b"), m.get("c")), (2, Some(&3), Some(&2), None));
        *m.get_or_insert_with("c", || 0) += 5;
        *m.get_or_insert_with("c", || 0) += 5;
        assert_eq!(m.get("c"), Some(&10));
        m.retain(|s, _| s != "b");
        assert!(!m.contains_key("b"));
        assert_eq!(m.remove("a"), Some(3));
        assert_eq!(m.remove("a"), None);
        assert_eq!(m.drain().collect::<Vec<_>>(), vec![("c".to_owned(), 10)]);
        assert_eq!(m.iter().count(), 0);
    }
}
