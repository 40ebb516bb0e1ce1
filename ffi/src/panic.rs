//! The panic boundary: no unwinding crosses into C.

use std::panic::{catch_unwind, UnwindSafe};

use crate::{fail, wechat_oauth_result};

/// Runs `f`, turning a panic into `WECHAT_OAUTH_RESULT_PANIC`.
pub(crate) fn boundary<F>(f: F) -> wechat_oauth_result
where
    F: FnOnce() -> wechat_oauth_result + UnwindSafe,
{
    catch_unwind(f).unwrap_or_else(|_| {
        fail(
            wechat_oauth_result::Panic,
            "internal error: a panic was caught at the C boundary",
        )
    })
}
