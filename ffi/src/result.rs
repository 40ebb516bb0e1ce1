//! Result codes, and the detail of the last failure on each thread.

use std::cell::RefCell;
use std::ffi::c_char;

use crate::strings::*;

/// Result of every fallible function: 0 is OK; the other values come in
/// bands: 1xxx a caller error, 2xxx configuration, 3xxx WeChat, 4xxx
/// session, 9xxx internal. Each code's number and message are given here
/// once ([`wechat_oauth_result_message`] reads the message).
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::EnumIter, strum::EnumMessage)]
pub enum wechat_oauth_result {
    /// Success.
    #[strum(message = "ok")]
    Ok = 0,
    /// A required pointer argument was NULL.
    #[strum(message = "a required pointer argument was NULL")]
    NullParameter = 1000,
    /// A string argument was not valid UTF-8.
    #[strum(message = "a string argument was not valid UTF-8")]
    InvalidUtf8 = 1001,
    /// The output buffer is too small; `written` holds the size needed.
    #[strum(message = "the output buffer is too small")]
    InsufficientSize = 1002,
    /// An argument is out of range (an index, a field number).
    #[strum(message = "an argument is out of range")]
    InvalidArgument = 1003,
    /// The handle is not in a state that allows this call.
    #[strum(message = "the handle is not in a state that allows this call")]
    WrongState = 1004,
    /// The configuration is invalid; [`wechat_oauth_last_error`] names the key.
    #[strum(message = "the configuration is invalid")]
    ConfigInvalid = 2000,
    /// The configuration file can't be read.
    #[strum(message = "the configuration file can't be read")]
    ConfigUnreadable = 2001,
    /// WeChat answered with an errcode ([`wechat_oauth_decision_errcode`]).
    #[strum(message = "WeChat answered with an errcode")]
    WechatErrcode = 3000,
    /// WeChat could not be reached.
    #[strum(message = "WeChat could not be reached")]
    WechatUnreachable = 3001,
    /// There is no valid session in the given cookies.
    #[strum(message = "there is no valid session")]
    NoSession = 4000,
    /// A panic was caught at the boundary (a bug: please report it).
    #[strum(message = "internal error: a panic was caught (please report it)")]
    Panic = 9000,
    /// An internal failure (e.g. the runtime could not start).
    #[strum(message = "internal error")]
    Internal = 9001,
}

impl wechat_oauth_result {
    /// The code with this number, if any.
    pub(crate) fn from_number(number: u32) -> Option<wechat_oauth_result> {
        <wechat_oauth_result as strum::IntoEnumIterator>::iter().find(|r| *r as u32 == number)
    }

    /// The code's message, e.g. `a required pointer argument was NULL`.
    pub(crate) fn message(self) -> &'static str {
        strum::EnumMessage::get_message(&self).unwrap_or("")
    }
}

thread_local! {
    pub(crate) static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Records the detail of a failure for [`wechat_oauth_last_error`].
pub(crate) fn fail(result: wechat_oauth_result, detail: impl Into<String>) -> wechat_oauth_result {
    let detail = detail.into();
    LAST_ERROR.with(|e| *e.borrow_mut() = detail);
    result
}

/// Writes the message of a result code into `buf` (`len` bytes);
/// `written` gets the message length. An unknown code gives
/// `INVALID_ARGUMENT`; a short buffer `INSUFFICIENT_SIZE` (with the size
/// needed in `written`).
///
/// # Safety
/// `buf` must have `len` writable bytes; `written` must be writable.
#[no_mangle]
pub unsafe extern "C" fn wechat_oauth_result_message(
    result: u32,
    buf: *mut c_char,
    len: usize,
    written: *mut usize,
) -> wechat_oauth_result {
    ffi_boundary!({
        let Some(r) = wechat_oauth_result::from_number(result) else {
            return wechat_oauth_result::InvalidArgument;
        };
        // SAFETY: the caller promises `len` writable bytes at `buf` and a writable `written`.
        unsafe { copy_out(r.message(), buf, len, written) }
    })
}

/// Writes the detail of the last failure on this thread (e.g. `config
/// [gateway] cookie_secret: must be at least 32 bytes …`) into `buf`;
/// empty when the last call succeeded without one.
///
/// # Safety
/// `buf` must have `len` writable bytes; `written` must be writable.
#[no_mangle]
pub unsafe extern "C" fn wechat_oauth_last_error(
    buf: *mut c_char,
    len: usize,
    written: *mut usize,
) -> wechat_oauth_result {
    ffi_boundary!({
        // SAFETY: the caller promises `len` writable bytes at `buf` and a writable `written`.
        LAST_ERROR.with(|e| unsafe { copy_out(&e.borrow(), buf, len, written) })
    })
}
