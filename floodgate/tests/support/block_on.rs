//! Drives a store's answer to completion on the test's own thread (no runtime): the thread
//! parks until the store's thread wakes it. Shared by the store tests through `#[path]`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};

use floodgate::{StoreError, StoreFuture};

struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// The store's answer, error included.
#[allow(dead_code)] // not every test binary looks at errors
pub(crate) fn try_run<T>(mut f: StoreFuture<T>) -> Result<T, StoreError> {
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(r) = Pin::new(&mut f).poll(&mut cx) {
            return r;
        }
        thread::park();
    }
}

/// The store's answer; a store error fails the test.
pub(crate) fn run<T>(f: StoreFuture<T>) -> T {
    try_run(f).expect("the store failed")
}

/// Any future's output, driven on this thread (for scenarios written as `async fn`).
#[allow(dead_code)] // not every test binary runs async scenarios
pub(crate) fn block_on<F: Future>(f: F) -> F::Output {
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let Poll::Ready(r) = f.as_mut().poll(&mut cx) {
            return r;
        }
        thread::park();
    }
}
