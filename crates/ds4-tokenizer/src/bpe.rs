//! Byte-level BPE over symbol ids (spec chat-and-tools.md §1.3 step 3): start with one
//! symbol per byte, repeatedly merge the adjacent pair with the lowest merge rank (leftmost
//! first on ties), stop when no adjacent pair has a rank.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

/// Multiplicative hasher for the integer keys used here.
#[derive(Default, Clone, Copy)]
pub struct IntHasher(u64);

impl Hasher for IntHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ b as u64).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }
    #[inline]
    fn write_u64(&mut self, v: u64) {
        let x = (self.0 ^ v).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = x ^ (x >> 29);
    }
    #[inline]
    fn write_u32(&mut self, v: u32) {
        self.write_u64(v as u64)
    }
}

pub type IntMap<K, V> = HashMap<K, V, BuildHasherDefault<IntHasher>>;

#[inline(always)]
fn key(a: u32, b: u32) -> u64 {
    ((a as u64) << 32) | b as u64
}

/// Merge table: (left symbol, right symbol) -> (rank, merged symbol).
#[derive(Clone)]
pub struct Merges {
    map: IntMap<u64, (u32, u32)>,
}

impl Merges {
    pub fn with_capacity(n: usize) -> Merges {
        Merges {
            map: IntMap::with_capacity_and_hasher(n, Default::default()),
        }
    }

    /// Adds a merge; an already present pair keeps its lower rank.
    pub fn insert(&mut self, left: u32, right: u32, rank: u32, result: u32) {
        self.map.entry(key(left, right)).or_insert((rank, result));
    }

    #[inline(always)]
    fn get(&self, left: u32, right: u32) -> Option<(u32, u32)> {
        self.map.get(&key(left, right)).copied()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Runs BPE on `syms` in place (initial symbols, one per byte); returns the final symbols
    /// in `syms`.
    pub fn apply(&self, syms: &mut Vec<u32>) {
        if syms.len() < 2 {
            return;
        }
        if syms.len() <= 48 {
            self.apply_small(syms)
        } else {
            self.apply_heap(syms)
        }
    }

    /// O(n²) variant for short words: keeps the rank of every adjacent pair.
    fn apply_small(&self, syms: &mut Vec<u32>) {
        const NONE: (u32, u32) = (u32::MAX, 0);
        let mut pairs: [(u32, u32); 48] = [NONE; 48];
        let n = syms.len();
        for i in 0..n - 1 {
            pairs[i] = self.get(syms[i], syms[i + 1]).unwrap_or(NONE);
        }
        let mut len = n;
        loop {
            let mut best = u32::MAX;
            let mut at = 0;
            for (i, p) in pairs[..len - 1].iter().enumerate() {
                if p.0 < best {
                    best = p.0;
                    at = i;
                }
            }
            if best == u32::MAX {
                break;
            }
            syms[at] = pairs[at].1;
            syms.remove(at + 1);
            // pairs[at] becomes (syms[at], syms[at+1]); shift the rest left by one.
            for j in at + 1..len - 2 {
                pairs[j] = pairs[j + 1];
            }
            len -= 1;
            if at + 1 < len {
                pairs[at] = self.get(syms[at], syms[at + 1]).unwrap_or(NONE);
            } else {
                pairs[at] = NONE;
            }
            if at > 0 {
                pairs[at - 1] = self.get(syms[at - 1], syms[at]).unwrap_or(NONE);
            }
            if len < 2 {
                break;
            }
        }
    }

    /// O(n log n) variant for long pieces: linked list + min-heap of (rank, position);
    /// ties go to the leftmost position. The heap key is packed into one u64 when
    /// positions fit in 32 bits (about twice as fast).
    fn apply_heap(&self, syms: &mut Vec<u32>) {
        if syms.len() < u32::MAX as usize {
            self.apply_heap_with(
                syms,
                |r, p| ((r as u64) << 32) | p as u64,
                |k| ((k >> 32) as u32, (k & 0xFFFF_FFFF) as usize),
            )
        } else {
            self.apply_heap_with(syms, |r, p| (r, p), |k| k)
        }
    }

    fn apply_heap_with<K: Ord + Copy>(
        &self,
        syms: &mut Vec<u32>,
        pack: impl Fn(u32, usize) -> K,
        unpack: impl Fn(K) -> (u32, usize),
    ) {
        const DEAD: u32 = u32::MAX;
        const END: usize = usize::MAX;
        let n = syms.len();
        let mut next: Vec<usize> = (1..=n).collect();
        let mut prev: Vec<usize> = (0..n).map(|i| i.wrapping_sub(1)).collect();
        next[n - 1] = END;
        let mut heap: BinaryHeap<Reverse<K>> = BinaryHeap::with_capacity(n);
        for i in 0..n - 1 {
            if let Some((r, _)) = self.get(syms[i], syms[i + 1]) {
                heap.push(Reverse(pack(r, i)));
            }
        }
        while let Some(Reverse(key)) = heap.pop() {
            let (rank, i) = unpack(key);
            if syms[i] == DEAD {
                continue;
            }
            let j = next[i];
            if j == END {
                continue;
            }
            // A rank identifies its pair, so an equal rank means the entry is current.
            let result = match self.get(syms[i], syms[j]) {
                Some((r, res)) if r == rank => res,
                _ => continue,
            };
            syms[i] = result;
            syms[j] = DEAD;
            let k = next[j];
            next[i] = k;
            if k != END {
                prev[k] = i;
                if let Some((r, _)) = self.get(result, syms[k]) {
                    heap.push(Reverse(pack(r, i)));
                }
            }
            let p = prev[i];
            if p != END {
                if let Some((r, _)) = self.get(syms[p], result) {
                    heap.push(Reverse(pack(r, p)));
                }
            }
        }
        syms.retain(|&s| s != DEAD);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Symbols: 0 'a', 1 'b', 2 "aa", 3 "ab", 4 "aab", 5 "aaaa".
    fn table() -> Merges {
        let mut m = Merges::with_capacity(4);
        m.insert(0, 0, 0, 2);
        m.insert(0, 1, 1, 3);
        m.insert(2, 1, 2, 4);
        m.insert(2, 2, 3, 5);
        m
    }

    #[test]
    fn leftmost_lowest_rank_first() {
        let m = table();
        let mut s = vec![0, 0, 0];
        m.apply(&mut s);
        assert_eq!(s, [2, 0]);
        let mut s = vec![0, 0, 0, 1];
        m.apply(&mut s);
        // aa|a|b -> aa|ab (rank 1) ; no (aa,ab) merge
        assert_eq!(s, [2, 3]);
        let mut s = vec![0, 0, 0, 0, 1];
        m.apply(&mut s);
        // aa aa b -> aaaa b (rank 3) since (aa,b) rank 2 needs adjacency: aa|aa|b -> (aa,b) at 1 first
        assert_eq!(s, [2, 4]);
    }

    #[test]
    fn heap_and_small_agree() {
        let m = table();
        let mut state = 12345u64;
        for len in [2usize, 5, 17, 47, 48, 49, 100, 333] {
            for _ in 0..50 {
                let v: Vec<u32> = (0..len)
                    .map(|_| {
                        state = state
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        ((state >> 33) % 2) as u32
                    })
                    .collect();
                let mut a = v.clone();
                let mut b = v.clone();
                if a.len() <= 48 {
                    m.apply_small(&mut a);
                } else {
                    // reference: small algorithm without the length limit, via chunks of
                    // merging one at a time using a plain scan
                    a = reference(&m, a);
                }
                let mut c = v.clone();
                m.apply_heap(&mut b);
                m.apply_heap_with(&mut c, |r, p| (r, p), |k| k);
                assert_eq!(a, b, "input {v:?}");
                assert_eq!(b, c, "input {v:?}");
            }
        }
    }

    fn reference(m: &Merges, mut s: Vec<u32>) -> Vec<u32> {
        loop {
            let mut best: Option<(u32, usize, u32)> = None;
            for i in 0..s.len().saturating_sub(1) {
                if let Some((r, res)) = m.get(s[i], s[i + 1]) {
                    if best.is_none_or(|b| r < b.0) {
                        best = Some((r, i, res));
                    }
                }
            }
            match best {
                Some((_, i, res)) => {
                    s[i] = res;
                    s.remove(i + 1);
                }
                None => return s,
            }
        }
    }
}
