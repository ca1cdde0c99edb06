//! The one place in this crate that needs `unsafe`: borrowing the raw file
//! descriptor inside pnet's transport channel so socket2 can set the
//! options pnet does not offer (multicast membership on an interface
//! index, `SO_BINDTODEVICE`, multicast loop, receive timeout).
//!
//! Why unsafe: pnet exposes the socket only as `Arc<pnet_sys::FileDesc>`
//! holding a plain `c_int`, and turning a raw fd into `BorrowedFd` is
//! `unsafe` in std because the compiler cannot prove the fd stays open.
//! Here it does: the borrow lives only inside the closure, while the
//! caller's `&FileDesc` keeps the `Arc` — and so the fd — alive.
#![allow(unsafe_code)]

use std::os::fd::BorrowedFd;

use socket2::SockRef;

/// Run `f` with a socket2 view of pnet's socket.
pub(super) fn with_sockref<R>(
    fd: &pnet::transport::TransportReceiver,
    f: impl FnOnce(SockRef<'_>) -> R,
) -> R {
    // SAFETY: `fd.socket` is an `Arc<FileDesc>` that owns an open socket
    // and closes it only on drop; we hold `&TransportReceiver` for the whole
    // borrow, so the descriptor cannot be closed or reused meanwhile.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd.socket.fd) };
    f(SockRef::from(&borrowed))
}
