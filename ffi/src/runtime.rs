//! The Tokio runtime that blocking calls run on: created on first use,
//! shared by every client, shut down (its threads joined) when the last
//! client holding it is freed, so that hosts exit clean under valgrind.

use std::sync::{Arc, Mutex, Weak};

use tokio::runtime::{Builder, Runtime};

static SHARED: Mutex<Weak<Runtime>> = Mutex::new(Weak::new());

/// The shared runtime, started if no client holds it.
///
/// Errors: the operating system's, when threads can't be started.
pub(crate) fn shared() -> std::io::Result<Arc<Runtime>> {
    let mut slot = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(rt) = slot.upgrade() {
        return Ok(rt);
    }
    let rt = Arc::new(
        Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("wechat-oauth")
            .enable_all()
            .build()?,
    );
    *slot = Arc::downgrade(&rt);
    Ok(rt)
}

/// Pins this library in the process (`RTLD_NODELETE`), so that a host that
/// unloads it after each request (PHP's FFI) keeps its shared clients.
pub(crate) fn keep_library_loaded() {
    // SAFETY: dladdr reads this function's own address; dlopen with
    // RTLD_NOLOAD | RTLD_NODELETE only marks an already loaded object.
    unsafe {
        let mut info: libc::Dl_info = std::mem::zeroed();
        let here = keep_library_loaded as *const libc::c_void;
        if libc::dladdr(here, &mut info) != 0 && !info.dli_fname.is_null() {
            let handle = libc::dlopen(
                info.dli_fname,
                libc::RTLD_NOW | libc::RTLD_NOLOAD | libc::RTLD_NODELETE,
            );
            // The handle is deliberately kept: closing it is what must never happen.
            let _ = handle;
        }
    }
}
