//! Server names interned per table: 200,000 stick entries must not carry 200,000 copies
//! of "server1". An entry stores a `u16` index; the table keeps the names.
//!
//! Both stick tables use it — the replicated one ([`crate::state::StickTableState`]) and
//! the data plane's — so they share one rule for when names are collected.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Names in the order they were first seen (so identical on replicas that intern in the
/// same order).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Names(Vec<Arc<str>>);

/// What [`Names::intern`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interned {
    /// Already known, at this index.
    Known(u16),
    /// Appended at this index.
    Added(u16),
}

impl Interned {
    pub fn index(self) -> u16 {
        match self {
            Interned::Known(i) | Interned::Added(i) => i,
        }
    }
}

impl Names {
    /// The name at `index`. Indexes come from [`Names::intern`] or [`Names::collect`].
    pub fn get(&self, index: u16) -> &Arc<str> {
        &self.0[usize::from(index)]
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The index of `name`, if known.
    pub fn position(&self, name: &str) -> Option<u16> {
        self.0.iter().position(|n| &**n == name).map(|i| i as u16)
    }

    /// Whether every index is in use, so the next new name needs a [`Names::collect`]
    /// first.
    pub fn is_full(&self) -> bool {
        self.0.len() > usize::from(u16::MAX)
    }

    /// The index of `name`, adding it when new. The caller collects first when
    /// [`Names::is_full`]: only it knows which indexes its entries still use.
    pub fn intern(&mut self, name: &Arc<str>) -> Interned {
        if let Some(i) = self.0.iter().position(|n| n == name) {
            return Interned::Known(i as u16);
        }
        debug_assert!(!self.is_full(), "collect names before interning a new one");
        self.0.push(name.clone());
        Interned::Added((self.0.len() - 1) as u16)
    }

    /// Drops the names whose index `used` does not contain (servers removed over a long
    /// life) and returns the map old index → new index, `None` for a dropped name.
    /// Deterministic: kept names keep their order.
    pub fn collect(&mut self, used: impl IntoIterator<Item = u16>) -> Vec<Option<u16>> {
        let mut remap = vec![None; self.0.len()];
        for i in used {
            remap[usize::from(i)] = Some(0);
        }
        let mut kept = Vec::with_capacity(self.0.len());
        for (slot, name) in remap.iter_mut().zip(&self.0) {
            if slot.is_some() {
                *slot = Some(kept.len() as u16);
                kept.push(name.clone());
            }
        }
        self.0 = kept;
        remap
    }

    /// Applies a [`Names::collect`] map to an index of a name that was in use.
    pub fn remapped(remap: &[Option<u16>], index: u16) -> u16 {
        remap[usize::from(index)].expect("collect keeps every name an entry uses")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    #[test]
    fn interns_once_and_collects_in_order() {
        let mut names = Names::default();
        assert_eq!(names.intern(&name("a")), Interned::Added(0));
        assert_eq!(names.intern(&name("b")), Interned::Added(1));
        assert_eq!(names.intern(&name("c")), Interned::Added(2));
        assert_eq!(names.intern(&name("a")), Interned::Known(0));
        let remap = names.collect([2, 0, 2]);
        assert_eq!(names.len(), 2);
        assert_eq!(remap[1], None);
        assert_eq!(&**names.get(Names::remapped(&remap, 0)), "a");
        assert_eq!(&**names.get(Names::remapped(&remap, 2)), "c");
        assert_eq!(names.intern(&name("b")), Interned::Added(2));
    }

    #[test]
    fn full_after_u16_range() {
        let mut names = Names::default();
        for i in 0..=u32::from(u16::MAX) {
            names.intern(&name(&i.to_string()));
        }
        assert!(names.is_full());
        names.collect([7]);
        assert_eq!(names.len(), 1);
        assert!(!names.is_full());
    }
}
