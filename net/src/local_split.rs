//! The read and write halves of one stream for two tasks of one thread (a connection's
//! reader and writer). `futures::io::split` guards the stream with a `BiLock`, built for
//! halves on different threads: two atomic swaps and a waker slot on every poll, about 4%
//! of a shard's CPU per small request (README, "Issue 15, a sixth sitting"). Here each
//! half borrows the stream only inside one poll, never across an await, and a glommio
//! executor polls one task at a time, so the borrows cannot overlap.

use std::cell::RefCell;
use std::io::{IoSlice, IoSliceMut};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use futures::io::{AsyncRead, AsyncWrite};

/// The half that reads.
pub struct LocalReadHalf<S>(Rc<RefCell<S>>);

/// The half that writes.
pub struct LocalWriteHalf<S>(Rc<RefCell<S>>);

/// Splits `stream` into halves that share it on this thread.
pub fn split<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
) -> (LocalReadHalf<S>, LocalWriteHalf<S>) {
    let shared = Rc::new(RefCell::new(stream));
    (LocalReadHalf(shared.clone()), LocalWriteHalf(shared))
}

/// The stream again, from both of its halves; `None` if they are halves of two streams.
pub fn reunite<S>(read: LocalReadHalf<S>, write: LocalWriteHalf<S>) -> Option<S> {
    if !Rc::ptr_eq(&read.0, &write.0) {
        return None;
    }
    drop(write);
    Rc::try_unwrap(read.0).ok().map(RefCell::into_inner)
}

impl<S> LocalReadHalf<S> {
    /// Runs `f` on the stream (the writer half never holds it across an await).
    pub fn with_stream<T>(&self, f: impl FnOnce(&mut S) -> T) -> T {
        f(&mut self.0.borrow_mut())
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for LocalReadHalf<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_read(cx, buf)
    }

    fn poll_read_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_read_vectored(cx, bufs)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for LocalWriteHalf<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_close(cx)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use futures::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[test]
    fn reunite_gives_the_stream_back_from_its_own_halves_only() {
        let (read, write) = split(futures::io::Cursor::new(vec![1u8, 2, 3]));
        let (other_read, other_write) = split(futures::io::Cursor::new(Vec::new()));
        assert!(reunite(read, other_write).is_none());
        assert!(reunite(other_read, write).is_none());
        let (read, write) = split(futures::io::Cursor::new(vec![1u8, 2, 3]));
        assert_eq!(reunite(read, write).unwrap().into_inner(), [1, 2, 3]);
    }

    /// A reader task parked on an empty socket must be woken by bytes that arrive while
    /// the writer half is in use: the halves keep the stream's own read and write wakers.
    #[test]
    fn a_parked_reader_wakes_while_the_other_half_writes() {
        glommio::LocalExecutorBuilder::default()
            .spawn(|| async {
                let listener = glommio::net::TcpListener::bind("127.0.0.1:0").unwrap();
                let addr = listener.local_addr().unwrap();
                let peer = glommio::spawn_local(async move {
                    let mut stream = listener.accept().await.unwrap();
                    let mut got = [0u8; 5];
                    stream.read_exact(&mut got).await.unwrap();
                    stream.write_all(b"pong!").await.unwrap();
                    got
                });
                let stream = glommio::net::TcpStream::connect(addr).await.unwrap();
                let (mut reader, mut writer) = split(stream);
                let read = glommio::spawn_local(async move {
                    let mut got = [0u8; 5];
                    reader.read_exact(&mut got).await.unwrap();
                    got
                });
                writer.write_all(b"ping!").await.unwrap();
                writer.flush().await.unwrap();
                assert_eq!(&peer.await, b"ping!");
                assert_eq!(&read.await, b"pong!");
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
