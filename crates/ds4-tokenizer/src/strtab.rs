//! Token strings in one flat buffer with an open-addressing index (string -> lowest id).
//! Avoids one allocation per token; lookups of `a + b` need no concatenation.

const EMPTY: u32 = u32::MAX;

#[inline]
fn hash_step(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01B3);
    }
    h
}

const SEED: u64 = 0xCBF2_9CE4_8422_2325;

#[inline]
fn finish(h: u64) -> u64 {
    let h = (h ^ (h >> 32)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    h ^ (h >> 29)
}

#[derive(Clone)]
pub struct StrTable {
    buf: String,
    offs: Vec<u32>,
    slots: Vec<u32>,
    mask: usize,
}

impl StrTable {
    /// Builds the table; returns `None` if the strings exceed 4 GiB in total.
    pub fn new<'a>(strings: impl ExactSizeIterator<Item = &'a str>) -> Option<StrTable> {
        let n = strings.len();
        let cap = (n * 2).next_power_of_two().max(16);
        let mut t = StrTable {
            buf: String::new(),
            offs: Vec::with_capacity(n + 1),
            slots: vec![EMPTY; cap],
            mask: cap - 1,
        };
        t.offs.push(0);
        for (i, s) in strings.enumerate() {
            t.buf.push_str(s);
            if t.buf.len() > u32::MAX as usize {
                return None;
            }
            t.offs.push(t.buf.len() as u32);
            let h = finish(hash_step(SEED, s.as_bytes())) as usize;
            let mut p = h & t.mask;
            loop {
                let slot = t.slots[p];
                if slot == EMPTY {
                    t.slots[p] = i as u32;
                    break;
                }
                if t.get_str(slot) == s {
                    break; // keep the lowest id
                }
                p = (p + 1) & t.mask;
            }
        }
        Some(t)
    }

    pub fn len(&self) -> usize {
        self.offs.len() - 1
    }

    #[inline]
    pub fn get_str(&self, id: u32) -> &str {
        &self.buf[self.offs[id as usize] as usize..self.offs[id as usize + 1] as usize]
    }

    /// Lowest id of the string `a + b`.
    #[inline]
    pub fn find_concat(&self, a: &str, b: &str) -> Option<u32> {
        let h = finish(hash_step(hash_step(SEED, a.as_bytes()), b.as_bytes())) as usize;
        let mut p = h & self.mask;
        loop {
            let slot = self.slots[p];
            if slot == EMPTY {
                return None;
            }
            let s = self.get_str(slot).as_bytes();
            if s.len() == a.len() + b.len()
                && &s[..a.len()] == a.as_bytes()
                && &s[a.len()..] == b.as_bytes()
            {
                return Some(slot);
            }
            p = (p + 1) & self.mask;
        }
    }

    #[inline]
    pub fn find(&self, s: &str) -> Option<u32> {
        self.find_concat(s, "")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_lowest_ids_and_concatenations() {
        let v = ["a", "b", "ab", "a", "", "abc"];
        let t = StrTable::new(v.iter().copied()).unwrap();
        assert_eq!(t.len(), 6);
        assert_eq!(t.find("a"), Some(0));
        assert_eq!(t.find("ab"), Some(2));
        assert_eq!(t.find_concat("a", "b"), Some(2));
        assert_eq!(t.find_concat("ab", "c"), Some(5));
        assert_eq!(t.find_concat("a", "bc"), Some(5));
        assert_eq!(t.find(""), Some(4));
        assert_eq!(t.find("abcd"), None);
        assert_eq!(t.get_str(5), "abc");
    }
}
