//! Placeholder, replaced by the real reader.
use crate::error::{Error, Result};
use crate::image::Image;
use crate::read::ReadOptions;

pub(crate) fn parse<'data>(_data: &'data [u8], opts: &ReadOptions) -> Result<Image<'data>> {
    Err(Error::NotAnImage { path: opts.path.clone(), detail: "reader not written yet".into() })
}
