//! Exact-DSML replay memory (spec §3.8): tool-call id → the exact DSML block the
//! model sampled, so a client that sends the call back in history gets the very
//! bytes the model produced (and the KV cache keeps matching).

use crate::model::ToolCall;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Default limits, as in ds4: 100000 ids and 512 MiB.
pub const DEFAULT_MAX_IDS: usize = 100_000;
pub const DEFAULT_MAX_BYTES: usize = 512 << 20;

/// A bounded id → raw DSML map with least-recently-used eviction.
/// Calls of one turn share one stored block (deduplicated by content).
#[derive(Debug)]
pub struct ToolMemory {
    max_ids: usize,
    max_bytes: usize,
    clock: u64,
    ids: HashMap<String, (Arc<str>, u64)>,
    lru: BTreeMap<u64, String>,
    blocks: HashMap<Arc<str>, usize>,
    bytes: usize,
}

impl Default for ToolMemory {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_IDS, DEFAULT_MAX_BYTES)
    }
}

impl ToolMemory {
    /// A memory holding at most `max_ids` ids and about `max_bytes` bytes
    /// (distinct blocks plus id strings). A limit of 0 disables storing.
    pub fn new(max_ids: usize, max_bytes: usize) -> Self {
        ToolMemory {
            max_ids,
            max_bytes,
            clock: 0,
            ids: HashMap::new(),
            lru: BTreeMap::new(),
            blocks: HashMap::new(),
            bytes: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Bytes accounted (distinct blocks + ids).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn contains(&self, id: &str) -> bool {
        self.ids.contains_key(id)
    }

    /// Remembers that every id in `ids` was produced by the exact block `raw_dsml`
    /// (the whole tool-calls block including any leading whitespace the model sampled).
    pub fn remember<S: AsRef<str>>(&mut self, ids: &[S], raw_dsml: &str) {
        if self.max_ids == 0 || self.max_bytes == 0 || raw_dsml.is_empty() {
            return;
        }
        let block: Arc<str> = match self.blocks.get_key_value(raw_dsml) {
            Some((k, _)) => k.clone(),
            None => Arc::from(raw_dsml),
        };
        self.remember_shared(ids, block);
    }

    /// [`ToolMemory::remember`] with a block the caller already allocated
    /// (e.g. before taking a lock around the memory, so that only the insert
    /// runs under it). A block equal to a stored one shares the stored copy.
    pub fn remember_shared<S: AsRef<str>>(&mut self, ids: &[S], block: Arc<str>) {
        if self.max_ids == 0 || self.max_bytes == 0 || block.is_empty() {
            return;
        }
        let block = match self.blocks.get_key_value(&*block) {
            Some((k, _)) => k.clone(),
            None => block,
        };
        for id in ids {
            let id = id.as_ref();
            if id.is_empty() {
                continue;
            }
            self.remove(id);
            self.clock += 1;
            let refs = self.blocks.entry(block.clone()).or_insert(0);
            if *refs == 0 {
                self.bytes += block.len();
            }
            *refs += 1;
            self.bytes += id.len();
            self.ids.insert(id.to_string(), (block.clone(), self.clock));
            self.lru.insert(self.clock, id.to_string());
        }
        self.evict();
    }

    fn remove(&mut self, id: &str) {
        if let Some((block, stamp)) = self.ids.remove(id) {
            self.lru.remove(&stamp);
            self.bytes -= id.len();
            if let Some(refs) = self.blocks.get_mut(&block) {
                *refs -= 1;
                if *refs == 0 {
                    self.blocks.remove(&block);
                    self.bytes -= block.len();
                }
            }
        }
    }

    fn evict(&mut self) {
        while self.ids.len() > self.max_ids || (self.bytes > self.max_bytes && !self.ids.is_empty())
        {
            let Some((_, id)) = self.lru.pop_first() else {
                break;
            };
            // `remove` would look up the stamp again; re-insert-free removal:
            if let Some((block, _)) = self.ids.remove(&id) {
                self.bytes -= id.len();
                if let Some(refs) = self.blocks.get_mut(&block) {
                    *refs -= 1;
                    if *refs == 0 {
                        self.blocks.remove(&block);
                        self.bytes -= block.len();
                    }
                }
            }
        }
    }

    /// The raw block remembered for one id.
    pub fn get(&self, id: &str) -> Option<Arc<str>> {
        self.ids.get(id).map(|(b, _)| b.clone())
    }

    /// Marks ids as recently used.
    pub fn touch<S: AsRef<str>>(&mut self, ids: &[S]) {
        for id in ids {
            if let Some(entry) = self.ids.get_mut(id.as_ref()) {
                self.lru.remove(&entry.1);
                self.clock += 1;
                entry.1 = self.clock;
                self.lru.insert(self.clock, id.as_ref().to_string());
            }
        }
    }

    /// All `(id, block)` pairs, least recently used first (for persisting the
    /// memory, e.g. into KV-cache files; reload with [`ToolMemory::remember`]).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Arc<str>)> + '_ {
        self.lru.values().filter_map(move |id| {
            self.ids
                .get_key_value(id.as_str())
                .map(|(k, (b, _))| (k.as_str(), b))
        })
    }

    /// The stored `(id, block)` pairs of the given ids (unknown ids are
    /// skipped; blocks are shared, not copied). Cheap: one hash lookup per id,
    /// meant to run under a lock, with [`ToolMemory::from_entries`] after it.
    pub fn lookup<'a, I: IntoIterator<Item = &'a str>>(&self, ids: I) -> Vec<(String, Arc<str>)> {
        ids.into_iter()
            .filter_map(|id| self.get(id).map(|b| (id.to_string(), b)))
            .collect()
    }

    /// An unbounded memory holding exactly `entries` (for rendering from a
    /// snapshot taken with [`ToolMemory::lookup`]).
    pub fn from_entries(entries: Vec<(String, Arc<str>)>) -> Self {
        let mut m = ToolMemory::new(usize::MAX, usize::MAX);
        for (id, block) in entries {
            m.remember_shared(&[id], block);
        }
        m
    }

    /// The exact block for an assistant message's calls: only if **every** call
    /// has a remembered id and all point to the **same** block.
    pub fn block_for_calls(&self, calls: &[ToolCall]) -> Option<Arc<str>> {
        let mut found: Option<Arc<str>> = None;
        for c in calls {
            let b = self.get(&c.id)?;
            match &found {
                Some(f) if **f != *b => return None,
                Some(_) => {}
                None => found = Some(b),
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(id: &str) -> ToolCall {
        ToolCall {
            id: id.into(),
            name: "f".into(),
            arguments: "{}".into(),
        }
    }

    #[test]
    fn same_block_required() {
        let mut m = ToolMemory::default();
        m.remember(&["a", "b"], "\n\nBLOCK1");
        m.remember(&["c"], "BLOCK2");
        assert_eq!(
            m.block_for_calls(&[call("a"), call("b")]).as_deref(),
            Some("\n\nBLOCK1")
        );
        assert_eq!(m.block_for_calls(&[call("a"), call("c")]), None);
        assert_eq!(m.block_for_calls(&[call("a"), call("zz")]), None);
        assert_eq!(m.block_for_calls(&[]), None);
        // deduplicated storage: 8 + 6 bytes of blocks + 3 ids
        assert_eq!(m.bytes(), 8 + 6 + 3);
    }

    #[test]
    fn lru_eviction_by_count_and_bytes() {
        let mut m = ToolMemory::new(2, 1 << 20);
        m.remember(&["a"], "A");
        m.remember(&["b"], "B");
        m.touch(&["a"]);
        m.remember(&["c"], "C");
        assert!(m.contains("a") && m.contains("c") && !m.contains("b"));
        let mut m = ToolMemory::new(100, 10);
        m.remember(&["x"], "12345");
        m.remember(&["y"], "67890");
        assert!(!m.contains("x") && m.contains("y"));
        assert!(m.bytes() <= 10);
        m.remember(&["y"], "67890");
        assert_eq!(m.len(), 1);
        assert_eq!(m.bytes(), 6);
    }

    #[test]
    fn iter_in_lru_order_and_reload() {
        let mut m = ToolMemory::default();
        m.remember(&["a", "b"], "AB");
        m.remember(&["c"], "C");
        m.touch(&["a"]);
        let got: Vec<(String, String)> = m
            .iter()
            .map(|(i, b)| (i.to_string(), b.to_string()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("b".into(), "AB".into()),
                ("c".into(), "C".into()),
                ("a".into(), "AB".into())
            ]
        );
        let mut n = ToolMemory::default();
        for (id, b) in &got {
            n.remember(&[id], b);
        }
        assert_eq!(n.bytes(), m.bytes());
        assert_eq!(
            n.block_for_calls(&[call("a"), call("b")]).as_deref(),
            Some("AB")
        );
    }

    #[test]
    fn snapshot_of_looked_up_ids_renders_like_the_memory() {
        let mut m = ToolMemory::default();
        m.remember(&["a", "b"], "AB");
        m.remember(&["c"], "C");
        let snap = ToolMemory::from_entries(m.lookup(["a", "b", "zz"]));
        assert_eq!(snap.len(), 2);
        assert!(!snap.contains("c") && !snap.contains("zz"));
        assert_eq!(snap.bytes(), 2 + 2);
        assert_eq!(
            snap.block_for_calls(&[call("a"), call("b")]).as_deref(),
            Some("AB")
        );
        // the snapshot shares the stored block instead of copying it
        assert!(Arc::ptr_eq(&snap.get("a").unwrap(), &m.get("a").unwrap()));
        // remember_shared deduplicates by content and ignores empty blocks
        m.remember_shared(&["d"], Arc::from("C"));
        assert!(Arc::ptr_eq(&m.get("d").unwrap(), &m.get("c").unwrap()));
        m.remember_shared(&["e"], Arc::from(""));
        assert!(!m.contains("e"));
    }
}
