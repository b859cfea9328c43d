//! Exact bytes a token string stands for under a vocabulary's naming convention
//! (GPT-2 byte-level, SentencePiece metaspace, WordPiece "##", plain UTF-8).
use crate::error::{CoreError, Result};
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// GPT-2 `bytes_to_unicode` map reversed; a character outside the map -> None.
    ByteLevel,
    /// "▁" -> " ", a whole token "<0xNN>" -> byte 0xNN, rest UTF-8.
    Metaspace,
    /// Leading "##" removed, rest UTF-8.
    WordPiece,
    /// UTF-8 as is.
    Utf8,
}

impl FromStr for Style {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "bytelevel" => Ok(Style::ByteLevel),
            "metaspace" => Ok(Style::Metaspace),
            "wordpiece" => Ok(Style::WordPiece),
            "utf8" => Ok(Style::Utf8),
            _ => Err(CoreError::new(format!(
                "unknown token style {s:?}; expected one of bytelevel, metaspace, wordpiece, utf8"
            ))),
        }
    }
}

const NO_BYTE: u16 = u16::MAX;
/// Characters of the GPT-2 map are all below U+0144 (256 + 68).
const MAP_LEN: usize = 256 + 68;

/// True for the bytes that GPT-2 maps to the character of the same code point.
const fn is_printable(b: usize) -> bool {
    (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255)
}

/// Code point -> byte, for the inverse of GPT-2's `bytes_to_unicode`.
const UNICODE_TO_BYTE: [u16; MAP_LEN] = {
    let mut table = [NO_BYTE; MAP_LEN];
    let mut n = 0;
    let mut b = 0;
    while b < 256 {
        if is_printable(b) {
            table[b] = b as u16;
        } else {
            table[256 + n] = b as u16;
            n += 1;
        }
        b += 1;
    }
    table
};

/// Bytes of a byte-level (GPT-2) token string, None if it holds a character outside the map.
pub fn bytelevel_to_bytes(token: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(token.len());
    for c in token.chars() {
        let code = c as usize;
        if code >= MAP_LEN || UNICODE_TO_BYTE[code] == NO_BYTE {
            return None;
        }
        out.push(UNICODE_TO_BYTE[code] as u8);
    }
    Some(out)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The byte of a whole token of the form "<0xNN>" (hex digits of either case).
pub fn byte_token_value(token: &str) -> Option<u8> {
    let b = token.as_bytes();
    if b.len() == 6 && b.starts_with(b"<0x") && b[5] == b'>' {
        Some(hex_value(b[3])? * 16 + hex_value(b[4])?)
    } else {
        None
    }
}

/// Bytes of a metaspace (SentencePiece) token string.
pub fn metaspace_to_bytes(token: &str) -> Vec<u8> {
    if let Some(b) = byte_token_value(token) {
        return vec![b];
    }
    token.replace('\u{2581}', " ").into_bytes()
}

/// Exact bytes `token` stands for under `style`; None only for byte-level tokens outside the map.
pub fn token_bytes(token: &str, style: Style) -> Option<Vec<u8>> {
    match style {
        Style::ByteLevel => bytelevel_to_bytes(token),
        Style::Metaspace => Some(metaspace_to_bytes(token)),
        Style::WordPiece => Some(
            token
                .strip_prefix("##")
                .unwrap_or(token)
                .as_bytes()
                .to_vec(),
        ),
        Style::Utf8 => Some(token.as_bytes().to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GPT-2's bytes_to_unicode, written the way the paper's code builds it.
    fn bytes_to_unicode() -> Vec<(u8, char)> {
        let mut bs: Vec<u32> = (33..=126).chain(161..=172).chain(174..=255).collect();
        let mut cs = bs.clone();
        let mut n = 0;
        for b in 0..256u32 {
            if !bs.contains(&b) {
                bs.push(b);
                cs.push(256 + n);
                n += 1;
            }
        }
        bs.iter()
            .zip(cs)
            .map(|(&b, c)| (b as u8, char::from_u32(c).unwrap()))
            .collect()
    }

    #[test]
    fn bytelevel_roundtrips_all_bytes() {
        for (b, c) in bytes_to_unicode() {
            assert_eq!(
                bytelevel_to_bytes(&c.to_string()),
                Some(vec![b]),
                "byte {b}"
            );
        }
        assert_eq!(bytelevel_to_bytes("Ġhello"), Some(b" hello".to_vec()));
        assert_eq!(bytelevel_to_bytes("Ċ"), Some(b"\n".to_vec()));
        assert_eq!(bytelevel_to_bytes("a b"), None); // a literal space is not in the map
        assert_eq!(bytelevel_to_bytes("日"), None);
        assert_eq!(bytelevel_to_bytes(""), Some(vec![]));
    }

    #[test]
    fn metaspace() {
        assert_eq!(metaspace_to_bytes("▁the"), b" the");
        assert_eq!(metaspace_to_bytes("<0x0A>"), b"\n");
        assert_eq!(metaspace_to_bytes("<0xfF>"), vec![0xff]);
        assert_eq!(metaspace_to_bytes("<0x0A>x"), b"<0x0A>x");
        assert_eq!(metaspace_to_bytes("<0xZZ>"), b"<0xZZ>");
        assert_eq!(metaspace_to_bytes("a▁▁b"), b"a  b");
    }

    #[test]
    fn wordpiece_and_utf8() {
        assert_eq!(
            token_bytes("##ing", Style::WordPiece),
            Some(b"ing".to_vec())
        );
        assert_eq!(token_bytes("##", Style::WordPiece), Some(vec![]));
        assert_eq!(
            token_bytes("ing##", Style::WordPiece),
            Some(b"ing##".to_vec())
        );
        assert_eq!(token_bytes("##x", Style::Utf8), Some(b"##x".to_vec()));
        assert!("nope".parse::<Style>().is_err());
        assert_eq!("bytelevel".parse::<Style>(), Ok(Style::ByteLevel));
    }
}
