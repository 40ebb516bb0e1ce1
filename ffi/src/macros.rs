//! The boundary every exported function goes through: no panic unwinds
//! into C, and every pointer argument is checked before it is used.

/// Runs an exported function's body inside the panic boundary: a panic
/// becomes `WECHAT_OAUTH_RESULT_PANIC` ([`crate::panic::boundary`]).
macro_rules! ffi_boundary {
    ($body:block) => {
        $crate::panic::boundary(::std::panic::AssertUnwindSafe(|| $body))
    };
}

/// A shared reference from a `*const` argument; a NULL one returns
/// `NULL_PARAMETER` (naming the argument) from the function.
macro_rules! try_ref {
    ($p:ident) => {
        // SAFETY: the function's `# Safety` section makes the caller promise
        // that a non-NULL pointer argument points at a live value of its type.
        match unsafe { $p.as_ref() } {
            Some(r) => r,
            None => {
                return $crate::result::fail(
                    $crate::result::wechat_oauth_result::NullParameter,
                    concat!("NULL argument: ", stringify!($p)),
                )
            }
        }
    };
}

/// An exclusive reference from a `*mut` argument (an out-pointer, a handle
/// the call changes); a NULL one returns `NULL_PARAMETER`.
macro_rules! try_mut {
    ($p:ident) => {
        // SAFETY: as in `try_ref!`; the caller also promises that no one
        // else uses the value during the call.
        match unsafe { $p.as_mut() } {
            Some(r) => r,
            None => {
                return $crate::result::fail(
                    $crate::result::wechat_oauth_result::NullParameter,
                    concat!("NULL argument: ", stringify!($p)),
                )
            }
        }
    };
}

/// A `&str` from a (pointer, length) argument pair: `NULL_PARAMETER` for a
/// NULL pointer, `INVALID_UTF8` for bytes that are not UTF-8.
macro_rules! try_str {
    ($ptr:ident, $len:expr) => {{
        if $ptr.is_null() {
            return $crate::result::fail(
                $crate::result::wechat_oauth_result::NullParameter,
                concat!("NULL argument: ", stringify!($ptr)),
            );
        }
        let given = $crate::strings::wechat_oauth_str {
            data: $ptr,
            len: $len,
        };
        // SAFETY: the caller promises `len` readable bytes at the pointer.
        match unsafe { given.read() } {
            Ok(Some(s)) => s,
            Ok(None) => unreachable!("checked non-NULL above"),
            Err(e) => return e,
        }
    }};
}
