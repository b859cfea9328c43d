//! Argument conversions every binding shares: text (the str policy of tokbench.text) and thread
//! counts.
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};
use std::borrow::Cow;

/// The UTF-8 text of a Python str. A str holding surrogates (no UTF-8 form) follows tiktoken:
/// re-read as UTF-16, so a surrogate pair becomes its character and a lone surrogate U+FFFD.
pub fn text<'a>(s: &'a Bound<'_, PyString>) -> PyResult<Cow<'a, str>> {
    match s.to_str() {
        Ok(t) => Ok(Cow::Borrowed(t)),
        Err(_) => {
            let raw = s.call_method1("encode", ("utf-16-le", "surrogatepass"))?;
            let raw = raw.downcast::<PyBytes>()?.as_bytes();
            let units: Vec<u16> = raw
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect();
            Ok(Cow::Owned(String::from_utf16_lossy(&units)))
        }
    }
}

/// [`text`] of every str.
pub fn texts<'a>(v: &'a [Bound<'_, PyString>]) -> PyResult<Vec<Cow<'a, str>>> {
    v.iter().map(text).collect()
}

/// A thread count: 0 = all cores; a count above the cores runs on all cores (crate::pool).
pub fn threads(num_threads: i64) -> PyResult<usize> {
    usize::try_from(num_threads).map_err(|_| {
        PyValueError::new_err(format!(
            "num_threads must be >= 0 (0: all cores), got {num_threads}"
        ))
    })
}
