//! Two Redis calls sent together: both futures are polled from the first poll on, so their
//! commands leave on the connection together and the answer takes one round trip.

use std::future::Future;
use std::pin::pin;
use std::task::Poll;

/// Both results, or the first error.
pub(super) async fn both<A, B, E>(
    a: impl Future<Output = Result<A, E>>,
    b: impl Future<Output = Result<B, E>>,
) -> Result<(A, B), E> {
    let (mut a, mut b) = (pin!(a), pin!(b));
    let (mut ra, mut rb) = (None, None);
    std::future::poll_fn(|cx| {
        if ra.is_none() {
            if let Poll::Ready(r) = a.as_mut().poll(cx) {
                ra = Some(r);
            }
        }
        if rb.is_none() {
            if let Poll::Ready(r) = b.as_mut().poll(cx) {
                rb = Some(r);
            }
        }
        match (ra.take(), rb.take()) {
            (Some(x), Some(y)) => Poll::Ready(Ok((x?, y?))),
            (x, y) => {
                (ra, rb) = (x, y);
                Poll::Pending
            }
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run<T>(f: impl Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn both_answers_are_given_or_the_first_error() {
        let ok = |v: u8| async move { Ok::<u8, &str>(v) };
        assert_eq!(run(both(ok(1), ok(2))), Ok((1, 2)));
        assert_eq!(run(both(ok(1), async { Err::<u8, &str>("b") })), Err("b"));
        assert_eq!(run(both(async { Err::<u8, &str>("a") }, ok(2))), Err("a"));
    }
}
