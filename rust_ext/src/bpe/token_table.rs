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

/// Little-endian u32 at `b[at..at + 4]`.
#[inline(always)]
fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

/// Little-endian u64 at `b[at..at + 8]`.
#[inline(always)]
fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// Bytes `0..len` of `b` (1 <= len <= 8, `len == b.len()`) as a little-endian number, by at most
/// two overlapping loads: no copy loop, no `memcpy` call. Overlapping bytes are the same bytes
/// at the same place, so OR-ing the loads is exact.
#[inline(always)]
fn load_le(b: &[u8]) -> u64 {
    let n = b.len();
    if n >= 4 {
        le32(b, 0) as u64 | ((le32(b, n - 4) as u64) << (8 * (n - 4)))
    } else if n > 0 {
        b[0] as u64 | ((b[n / 2] as u64) << (8 * (n / 2))) | ((b[n - 1] as u64) << (8 * (n - 1)))
    } else {
        0
    }
}

/// `bytes` (at most `TINY` long) and its length as one number; distinct for distinct inputs.
#[inline(always)]
fn pack_tiny(bytes: &[u8]) -> u64 {
    load_le(bytes) | ((bytes.len() as u64) << 56)
}

/// `bytes` (at most `INLINE` long) and its length as one number; distinct for distinct inputs.
#[inline(always)]
fn pack(bytes: &[u8]) -> u128 {
    let n = bytes.len();
    let (lo, hi) = if n > 8 {
        (le64(bytes, 0), le64(bytes, n - 8) >> (8 * (16 - n)))
    } else {
        (load_le(bytes), 0)
    };
    (lo as u128) | ((hi as u128) << 64) | ((n as u128) << 120)
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
            // look up before inserting: `entry` would allocate the boxed key on every call
            if !self.long.contains_key(bytes) {
                self.long.insert(bytes.into(), id);
            }
            self.long.get_mut(bytes).expect("just inserted")
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

/// The bytes a `pack_tiny` key stands for (its inverse).
fn unpack_tiny(key: u64) -> Vec<u8> {
    let n = (key >> 56) as usize;
    key.to_le_bytes()[..n].to_vec()
}

/// The bytes a `pack` key stands for (its inverse).
fn unpack(key: u128) -> Vec<u8> {
    let n = (key >> 120) as usize;
    let mut out = (key as u64).to_le_bytes().to_vec();
    if n > 8 {
        out.extend_from_slice(&((key >> 64) as u64).to_le_bytes()[..n - 8]);
    }
    out.truncate(n);
    out
}

impl TokenTable<u64> {
    /// Add `other`'s counts into this table (keys are packed the same way in both, so no key
    /// is unpacked or re-hashed from its bytes).
    pub fn add_counts(&mut self, other: TokenTable<u64>) {
        for (k, v) in other.tiny {
            *self.tiny.entry(k).or_insert(0) += v;
        }
        for (k, v) in other.short {
            *self.short.entry(k).or_insert(0) += v;
        }
        for (k, v) in other.long {
            *self.long.entry(k).or_insert(0) += v;
        }
    }

    /// Every (bytes, count), in no particular order.
    pub fn into_entries(self) -> impl Iterator<Item = (Vec<u8>, u64)> {
        self.tiny
            .into_iter()
            .map(|(k, v)| (unpack_tiny(k), v))
            .chain(self.short.into_iter().map(|(k, v)| (unpack(k), v)))
            .chain(self.long.into_iter().map(|(k, v)| (k.into_vec(), v)))
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
    fn packing_equals_a_byte_copy() {
        let data: Vec<u8> = (0..64u32).map(|i| (i * 37 + 11) as u8).collect();
        for n in 0..=INLINE {
            for at in 0..8 {
                let b = &data[at..at + n];
                let mut buf = [0u8; 16];
                buf[..n].copy_from_slice(b);
                buf[15] = n as u8;
                assert_eq!(pack(b), u128::from_le_bytes(buf), "{n}");
                if n <= TINY {
                    let mut buf = [0u8; 8];
                    buf[..n].copy_from_slice(b);
                    buf[7] = n as u8;
                    assert_eq!(pack_tiny(b), u64::from_le_bytes(buf), "{n}");
                }
            }
        }
    }

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
        let mut entries: Vec<(Vec<u8>, u32)> = t.tiny.iter().map(|(&k, &v)| (unpack_tiny(k), v))
            .chain(t.short.iter().map(|(&k, &v)| (unpack(k), v))).collect();
        entries.sort_by_key(|e| e.1);
        let short: Vec<&[u8]> = keys.iter().copied().filter(|k| k.len() <= INLINE).collect();
        assert_eq!(entries.iter().map(|e| e.0.as_slice()).collect::<Vec<_>>(), short, "unpack inverts pack");
        assert_eq!(t.get(b"sixteen bytes!!?"), None);
    }
}
