//! Bytes -> value (a token id, or the ids of a cached pre-token), tuned for the hot lookup
//! "is this whole pre-token a token?".
//!
//! Keys of up to 7 bytes are packed with their length into one `u64`, keys of 8 to 15 bytes
//! into one `u128` (no pointer to chase, no byte comparison; the small entries keep the table
//! of the most frequent, short keys compact), longer ones live in a map of boxed byte strings.
use rustc_hash::FxHashMap;

/// Longest keys packed into a `u64` / `u128`.
const TINY: usize = 7;
const INLINE: usize = 15;

pub struct TokenTable<V = u32> {
    tiny: FxHashMap<u64, V>,
    short: FxHashMap<u128, V>,
    long: FxHashMap<Box<[u8]>, V>,
}

impl<V> Default for TokenTable<V> {
    fn default() -> Self {
        TokenTable { tiny: FxHashMap::default(), short: FxHashMap::default(), long: FxHashMap::default() }
    }
}

/// `bytes` (at most `TINY` long) and its length as one number; distinct for distinct inputs.
#[inline(always)]
fn pack_tiny(bytes: &[u8]) -> u64 {
    let mut buf = [0u8; 8];
    buf[..bytes.len()].copy_from_slice(bytes);
    buf[7] = bytes.len() as u8;
    u64::from_le_bytes(buf)
}

/// `bytes` (at most `INLINE` long) and its length as one number; distinct for distinct inputs.
#[inline(always)]
fn pack(bytes: &[u8]) -> u128 {
    let mut buf = [0u8; 16];
    buf[..bytes.len()].copy_from_slice(bytes);
    buf[15] = bytes.len() as u8;
    u128::from_le_bytes(buf)
}

impl<V> TokenTable<V> {
    pub fn with_capacity(n: usize) -> Self {
        let mut t = TokenTable::default();
        t.tiny.reserve(n);
        t
    }

    /// The value of `bytes`, inserting `id` when absent.
    pub fn get_or_insert(&mut self, bytes: &[u8], id: V) -> &mut V {
        if bytes.len() <= TINY {
            self.tiny.entry(pack_tiny(bytes)).or_insert(id)
        } else if bytes.len() <= INLINE {
            self.short.entry(pack(bytes)).or_insert(id)
        } else {
            self.long.entry(bytes.into()).or_insert(id)
        }
    }

    #[inline(always)]
    pub fn get_ref(&self, bytes: &[u8]) -> Option<&V> {
        if bytes.len() <= TINY {
            self.tiny.get(&pack_tiny(bytes))
        } else if bytes.len() <= INLINE {
            self.short.get(&pack(bytes))
        } else {
            self.long.get(bytes)
        }
    }

    pub fn clear(&mut self) {
        self.tiny.clear();
        self.short.clear();
        self.long.clear();
    }

    pub fn len(&self) -> usize {
        self.tiny.len() + self.short.len() + self.long.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<V: Copy> TokenTable<V> {
    #[inline(always)]
    pub fn get(&self, bytes: &[u8]) -> Option<V> {
        self.get_ref(bytes).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_and_zero_bytes_are_told_apart() {
        let keys: [&[u8]; 10] = [b"", b"\0", b"\0\0", b"a", b"a\0", b"seven!!", b"eight!!!", b"\0\0\0\0\0\0\0\0",
                                 b"exactly15bytes!", b"sixteen bytes!!!"];
        let mut t = TokenTable::with_capacity(8);
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(*t.get_or_insert(k, i as u32), i as u32);
        }
        assert_eq!(t.len(), keys.len());
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(t.get(k), Some(i as u32));
        }
        assert_eq!(t.get(b"\0\0\0"), None);
        assert_eq!(t.get(b"sixteen bytes!!?"), None);
    }
}
