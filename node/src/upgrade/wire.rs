//! The hand-over socket's framing: messages with file descriptors attached, over a
//! Unix stream socket between the old and the new process.
//!
//! ```text
//!   frame  = u32 LE payload length · u32 LE descriptor count · payload (bincode)
//!            · then one marker byte per batch of at most FDS_PER_BATCH descriptors,
//!              each byte carrying its batch as SCM_RIGHTS
//! ```
//!
//! Descriptors ride on marker bytes of their own, after the payload, so a plain read of
//! the payload can never swallow a byte that carries descriptors (the kernel would
//! close them). A peer that sends garbage, lies about sizes, closes mid-frame or sends
//! the wrong number of descriptors gets a [`WireError`], never a panic; descriptors
//! that arrived are closed with the error.
#![allow(unsafe_code)]

use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Descriptors per marker byte (the kernel's SCM_MAX_FD is 253).
const FDS_PER_BATCH: usize = 250;
/// Largest payload accepted: 9,900 connections with a full relay pipe each in flight
/// would be ~2.5 GB, which no hand-over should carry; 1 GiB bounds a lying peer.
const MAX_PAYLOAD: usize = 1 << 30;
/// More descriptors than one process may hold here (20,000) is a lie.
const MAX_FDS: usize = 65_536;

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("hand-over socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("hand-over socket closed by the other process")]
    Closed,
    #[error("hand-over frame too large: {0} bytes")]
    TooLarge(usize),
    #[error("hand-over frame announces {0} descriptors")]
    TooManyFds(usize),
    #[error("hand-over descriptors: {0}")]
    Fds(String),
    #[error("hand-over message cannot be encoded: {0}")]
    Encode(#[from] bincode::error::EncodeError),
    #[error("hand-over message is not understood: {0}")]
    Decode(#[from] bincode::error::DecodeError),
}

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Sends `message` with `fds` attached.
pub fn send<T: Serialize>(
    socket: &mut UnixStream,
    message: &T,
    fds: &[RawFd],
) -> Result<(), WireError> {
    let payload = bincode::serde::encode_to_vec(message, config())?;
    if payload.len() > MAX_PAYLOAD {
        return Err(WireError::TooLarge(payload.len()));
    }
    let mut head = [0u8; 8];
    head[..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    head[4..].copy_from_slice(&(fds.len() as u32).to_le_bytes());
    socket.write_all(&head)?;
    socket.write_all(&payload)?;
    for batch in fds.chunks(FDS_PER_BATCH) {
        let marker = [1u8];
        let iov = [IoSlice::new(&marker)];
        let rights = [ControlMessage::ScmRights(batch)];
        loop {
            match sendmsg::<()>(socket.as_raw_fd(), &iov, &rights, MsgFlags::empty(), None) {
                Ok(1) => break,
                Ok(_) => return Err(WireError::Fds("a marker byte was not sent".into())),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(WireError::Io(e.into())),
            }
        }
    }
    Ok(())
}

/// Receives one message and the descriptors attached to it (close-on-exec).
pub fn receive<T: DeserializeOwned>(
    socket: &mut UnixStream,
) -> Result<(T, Vec<OwnedFd>), WireError> {
    let mut head = [0u8; 8];
    read_exact(socket, &mut head)?;
    let len = u32::from_le_bytes(head[..4].try_into().expect("4 bytes")) as usize;
    let count = u32::from_le_bytes(head[4..].try_into().expect("4 bytes")) as usize;
    if len > MAX_PAYLOAD {
        return Err(WireError::TooLarge(len));
    }
    if count > MAX_FDS {
        return Err(WireError::TooManyFds(count));
    }
    let mut payload = vec![0u8; len];
    read_exact(socket, &mut payload)?;
    let mut fds: Vec<OwnedFd> = Vec::with_capacity(count);
    while fds.len() < count {
        let want = (count - fds.len()).min(FDS_PER_BATCH);
        receive_batch(socket, want, &mut fds)?;
    }
    let (message, used) = bincode::serde::decode_from_slice(&payload, config())?;
    if used != payload.len() {
        return Err(WireError::Fds(format!(
            "{} bytes after the message",
            payload.len() - used
        )));
    }
    Ok((message, fds))
}

fn read_exact(socket: &mut UnixStream, buf: &mut [u8]) -> Result<(), WireError> {
    socket.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => WireError::Closed,
        _ => WireError::Io(e),
    })
}

fn receive_batch(
    socket: &mut UnixStream,
    want: usize,
    fds: &mut Vec<OwnedFd>,
) -> Result<(), WireError> {
    let mut marker = [0u8; 1];
    let mut cmsg = nix::cmsg_space!([RawFd; FDS_PER_BATCH]);
    let received: Vec<RawFd> = loop {
        let mut iov = [IoSliceMut::new(&mut marker)];
        match recvmsg::<()>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(msg) => {
                if msg.bytes == 0 {
                    return Err(WireError::Closed);
                }
                let cmsgs = msg
                    .cmsgs()
                    .map_err(|_| WireError::Fds("descriptors truncated".into()))?;
                let mut got = Vec::new();
                for c in cmsgs {
                    if let ControlMessageOwned::ScmRights(batch) = c {
                        got.extend(batch);
                    }
                }
                break got;
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(WireError::Io(e.into())),
        }
    };
    // SAFETY: SCM_RIGHTS hands this process new descriptors that nothing else in it
    // knows or owns; each is wrapped exactly once, here, and so closed exactly once.
    let owned: Vec<OwnedFd> = received
        .into_iter()
        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
        .collect();
    if owned.len() != want {
        return Err(WireError::Fds(format!(
            "expected {want} in a batch, got {}",
            owned.len()
        )));
    }
    fds.extend(owned);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Note {
        text: String,
        bytes: Vec<u8>,
    }

    #[test]
    fn messages_and_descriptors_arrive_together_and_in_order() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        // 600 descriptors: three batches. Pipes, so each can be checked for its identity.
        let pipes: Vec<(OwnedFd, OwnedFd)> =
            (0..300).map(|_| nix::unistd::pipe().unwrap()).collect();
        let raw: Vec<RawFd> = pipes
            .iter()
            .flat_map(|(r, w)| [r.as_raw_fd(), w.as_raw_fd()])
            .collect();
        let note = Note {
            text: "offer".into(),
            bytes: vec![7; 100_000],
        };
        let sender = std::thread::spawn(move || {
            send(&mut a, &note, &raw).unwrap();
            send(&mut a, &"second", &[]).unwrap();
            (a, pipes)
        });
        let (got, fds): (Note, _) = receive(&mut b).unwrap();
        assert_eq!(got.text, "offer");
        assert_eq!(got.bytes.len(), 100_000);
        assert_eq!(fds.len(), 600);
        let (second, none): (String, _) = receive(&mut b).unwrap();
        assert_eq!((second.as_str(), none.len()), ("second", 0));
        let (_a, pipes) = sender.join().unwrap();
        // The 2k+1-th descriptor received is the write end of the k-th pipe: a byte
        // written there comes out of the sender's read end.
        for (k, (read_end, _)) in pipes.iter().enumerate().step_by(97) {
            nix::unistd::write(&fds[2 * k + 1], &[k as u8]).unwrap();
            let mut byte = [0u8; 1];
            nix::unistd::read(read_end, &mut byte).unwrap();
            assert_eq!(byte[0], k as u8);
        }
    }

    #[test]
    fn garbage_and_early_close_are_errors_not_panics() {
        // A header that announces more than allowed.
        let (mut a, mut b) = UnixStream::pair().unwrap();
        a.write_all(&u32::MAX.to_le_bytes()).unwrap();
        a.write_all(&0u32.to_le_bytes()).unwrap();
        assert!(matches!(
            receive::<Note>(&mut b),
            Err(WireError::TooLarge(_))
        ));

        // A payload that is not the message.
        let (mut a, mut b) = UnixStream::pair().unwrap();
        a.write_all(&3u32.to_le_bytes()).unwrap();
        a.write_all(&0u32.to_le_bytes()).unwrap();
        a.write_all(&[0xff, 0xff, 0xff]).unwrap();
        assert!(matches!(receive::<Note>(&mut b), Err(WireError::Decode(_))));

        // Descriptors announced, never sent: the peer closes.
        let (mut a, mut b) = UnixStream::pair().unwrap();
        let payload = bincode::serde::encode_to_vec("x", config()).unwrap();
        a.write_all(&(payload.len() as u32).to_le_bytes()).unwrap();
        a.write_all(&5u32.to_le_bytes()).unwrap();
        a.write_all(&payload).unwrap();
        drop(a);
        assert!(matches!(receive::<String>(&mut b), Err(WireError::Closed)));

        // Closed mid-header.
        let (mut a, mut b) = UnixStream::pair().unwrap();
        a.write_all(&[1, 2]).unwrap();
        drop(a);
        assert!(matches!(receive::<String>(&mut b), Err(WireError::Closed)));
    }
}
