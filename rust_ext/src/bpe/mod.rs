//! Fast byte-level BPE encoding with tiktoken / HF `tokenizers` semantics, and training.
pub mod char_class;
pub mod count;
pub mod encoder;
pub mod model;
pub mod pretokenize;
pub mod pretokenize_hand;
pub mod super_runs;
pub mod token_table;
pub mod train;
#[cfg(feature = "python")]
pub mod py;
