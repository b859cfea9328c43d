//! Splitting input into initial units: UTF-8 characters, each invalid byte a unit of its own.

/// Which initial symbols a BPE model starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Units {
    /// Every byte is a symbol (byte-level BPE, tiktoken).
    Bytes,
    /// Every UTF-8 character is a symbol (SentencePiece / HF char BPE).
    Chars,
}

/// Clears `out` and fills it with the start offset of every character of `data`, then
/// `data.len()`. A byte that is not part of a valid UTF-8 sequence is a character on its own.
pub fn char_boundaries(data: &[u8], out: &mut Vec<usize>) {
    out.clear();
    out.reserve(data.len() + 1);
    if data.is_ascii() {
        out.extend(0..=data.len());
        return;
    }
    let mut offset = 0;
    for chunk in data.utf8_chunks() {
        let valid = chunk.valid();
        out.extend(valid.char_indices().map(|(i, _)| offset + i));
        offset += valid.len();
        for _ in chunk.invalid() {
            out.push(offset);
            offset += 1;
        }
    }
    out.push(offset);
}

/// Unit boundaries for `units` (see [`char_boundaries`]).
pub fn unit_boundaries(data: &[u8], units: Units, out: &mut Vec<usize>) {
    match units {
        Units::Bytes => {
            out.clear();
            out.extend(0..=data.len());
        }
        Units::Chars => char_boundaries(data, out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds(d: &[u8]) -> Vec<usize> {
        let mut v = Vec::new();
        char_boundaries(d, &mut v);
        v
    }

    #[test]
    fn boundaries() {
        assert_eq!(bounds(b""), vec![0]);
        assert_eq!(bounds(b"ab"), vec![0, 1, 2]);
        assert_eq!(bounds("aé日".as_bytes()), vec![0, 1, 3, 6]);
        // truncated 3-byte sequence: two invalid bytes, each its own unit
        assert_eq!(bounds(b"a\xe6\x97b"), vec![0, 1, 2, 3, 4]);
        assert_eq!(bounds(b"\xff\xfe"), vec![0, 1, 2]);
        let mut v = Vec::new();
        unit_boundaries("é".as_bytes(), Units::Bytes, &mut v);
        assert_eq!(v, vec![0, 1, 2]);
    }
}
