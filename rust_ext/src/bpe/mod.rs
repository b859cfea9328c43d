//! Fast byte-level BPE encoding with tiktoken / HF `tokenizers` semantics, and training.
pub mod count;
pub mod encoder;
pub mod model;
pub mod pretokenize;
pub mod super_runs;
pub mod train;
#[cfg(feature = "python")]
pub mod py;
