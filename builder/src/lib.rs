//! Function matching, normalisation, diff classification and package assembly.
//!
//! The builder takes two [`hotpatch_formats::Image`]s, a baseline and its
//! update, and decides which functions really changed.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
