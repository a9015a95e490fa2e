//! Aligned scratch buffers, allocated once per thread and reused across calls.

use crate::error::{Error, Result};
use aligned_vec::{AVec, ConstAlign};
use std::cell::RefCell;
use std::thread::LocalKey;

/// 64-byte (cache-line) aligned f32 storage.
pub(crate) type Buffer = AVec<f32, ConstAlign<64>>;

/// A thread's reusable buffer slot.
pub(crate) type Slot = RefCell<Buffer>;

/// Creates an empty slot for a `thread_local!`.
pub(crate) fn empty_slot() -> Slot {
    RefCell::new(AVec::new(64))
}

/// Runs `f` on this thread's buffer from `slot`, grown to at least `len` floats.
///
/// Growth zero-fills once; afterwards the buffer is reused as it is (callers overwrite what they
/// read). If the slot is already borrowed (a rayon worker that picked up a second job while the
/// first waits), a fresh buffer serves the nested call instead of panicking.
pub(crate) fn with_buffer<R>(
    slot: &'static LocalKey<Slot>,
    len: usize,
    f: impl FnOnce(&mut [f32]) -> R,
) -> R {
    slot.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < len {
                buf.resize(len, 0.0);
            }
            f(&mut buf[..len])
        }
        Err(_) => {
            let mut fresh: Buffer = AVec::new(64);
            fresh.resize(len, 0.0);
            f(&mut fresh[..])
        }
    })
}

/// Grows this thread's buffer in `slot` to at least `len` floats, or `Err` when that cannot be
/// allocated: a call checks that its scratch can be had before it writes anything.
pub(crate) fn reserve(slot: &'static LocalKey<Slot>, len: usize) -> Result<()> {
    slot.with(|cell| {
        let Ok(mut buf) = cell.try_borrow_mut() else { return Ok(()) };
        let more = len.saturating_sub(buf.len());
        buf.try_reserve(more).map_err(|_| out_of_memory("scratch", len))?;
        if buf.len() < len {
            buf.resize(len, 0.0);
        }
        Ok(())
    })
}

/// A vector of `len` copies of `value`, or `Err` when it cannot be allocated: for buffers whose
/// size comes from the caller's shapes.
pub(crate) fn try_filled<T: Clone>(len: usize, value: T) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(len).map_err(|_| out_of_memory("buffer", len))?;
    v.resize(len, value);
    Ok(v)
}

fn out_of_memory(what: &str, len: usize) -> Error {
    Error::OutOfMemory(format!("{what} of {len} elements"))
}
