//! Helpers shared by the fuzz targets: the strict exposition checker of the property tests
//! (engine/tests/check/mod.rs, written independently of the engine) and the line-based input format
//! of the `render` target.

#[path = "../../engine/tests/check/mod.rs"]
pub mod check;
pub mod render_input;
