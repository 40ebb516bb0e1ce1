//! Strings across the boundary: borrowed (pointer, length) pairs, and
//! copies into caller buffers.

use std::ffi::c_char;

use crate::result::*;

/// A borrowed UTF-8 string: `data` points at `len` bytes, not NUL-terminated.
/// `data` is NULL (and `len` 0) for an absent value.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct wechat_oauth_str {
    /// The bytes, or NULL.
    pub data: *const c_char,
    /// Their number.
    pub len: usize,
}

impl wechat_oauth_str {
    pub(crate) const ABSENT: wechat_oauth_str = wechat_oauth_str {
        data: std::ptr::null(),
        len: 0,
    };

    pub(crate) fn of(s: &str) -> wechat_oauth_str {
        wechat_oauth_str {
            data: s.as_ptr().cast(),
            len: s.len(),
        }
    }

    /// The string, `Ok(None)` when absent.
    ///
    /// # Safety
    /// `data` must point at `len` readable bytes, or be NULL.
    pub(crate) unsafe fn read<'a>(self) -> Result<Option<&'a str>, wechat_oauth_result> {
        if self.data.is_null() {
            return Ok(None);
        }
        // SAFETY: the caller promises `len` readable bytes at a non-NULL `data`.
        let bytes = unsafe { std::slice::from_raw_parts(self.data.cast::<u8>(), self.len) };
        std::str::from_utf8(bytes).map(Some).map_err(|_| {
            fail(
                wechat_oauth_result::InvalidUtf8,
                "a string argument was not valid UTF-8",
            )
        })
    }
}

/// Copies `text` into a caller buffer: `written` gets its length (or the
/// size needed); no NUL is added.
///
/// # Safety
/// `buf` must have `len` writable bytes (or be NULL with `len` 0);
/// `written` must be writable or NULL.
pub(crate) unsafe fn copy_out(
    text: &str,
    buf: *mut c_char,
    len: usize,
    written: *mut usize,
) -> wechat_oauth_result {
    if written.is_null() || (buf.is_null() && len > 0) {
        return wechat_oauth_result::NullParameter;
    }
    // SAFETY: `written` is non-NULL (checked) and the caller promises it is writable.
    unsafe { *written = text.len() };
    if text.len() > len {
        return wechat_oauth_result::InsufficientSize;
    }
    if !text.is_empty() {
        // SAFETY: `buf` holds `len` >= `text.len()` writable bytes, and a
        // caller's buffer can't overlap the library's own string.
        unsafe { std::ptr::copy_nonoverlapping(text.as_ptr(), buf.cast::<u8>(), text.len()) };
    }
    wechat_oauth_result::Ok
}

/// Writes a header pair to the outputs; `INVALID_ARGUMENT` when absent.
pub(crate) fn write_header(
    header: Option<(&str, &str)>,
    name: &mut wechat_oauth_str,
    value: &mut wechat_oauth_str,
) -> wechat_oauth_result {
    match header {
        Some((n, v)) => {
            *name = wechat_oauth_str::of(n);
            *value = wechat_oauth_str::of(v);
            wechat_oauth_result::Ok
        }
        None => fail(
            wechat_oauth_result::InvalidArgument,
            "header index out of range",
        ),
    }
}
