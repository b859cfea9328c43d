//! Python bindings of the tokbench core. Keep this file thin: each module below is plain Rust,
//! usable from Rust tests without Python; this file only converts arguments and releases the GIL.
use pyo3::prelude::*;

mod bpe;

/// Version of the compiled core, for provenance records.
#[pyfunction]
fn core_version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(core_version, m)?)?;
    bpe::py::register(m)?;
    Ok(())
}
