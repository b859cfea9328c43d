//! Fast byte-level BPE encoding with tiktoken / HF `tokenizers` semantics.
pub mod encoder;
pub mod model;
pub mod pretokenize;
#[cfg(feature = "python")]
pub mod py;
