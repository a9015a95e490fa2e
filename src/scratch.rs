//! Aligned scratch buffers, allocated once per thread and reused across calls.

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
