//! The report of a 404 for an unrouted path as an offence (`ProbeBan::not_found_reports`),
//! made once the response is known, before it goes out.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use actix_web::dev::ServiceResponse;
use actix_web::http::StatusCode;
use actix_web::Error;
use pin_project_lite::pin_project;

use crate::client::ClientKey;
use crate::clock::Timestamp;
use crate::gatekeeper::Gate;
use crate::state::{BanReason, ReportOutcome};
use crate::store::StoreFuture;
use crate::targeting::Findings;

/// What reporting a 404 needs.
pub(crate) struct NotFoundReporter {
    shared: Arc<Gate>,
    key: ClientKey,
}

impl NotFoundReporter {
    /// Feeds a ban this reporter caused to IPv6 rotation.
    fn note_ban(&self, until: Timestamp, now: Timestamp) {
        if let Some(step) = self
            .shared
            .note_ban(&self.key, Some(until), BanReason::Reported, now)
        {
            actix_web::rt::spawn(async move {
                if let Err(err) = step.await {
                    log::warn!("floodgate: store failed while banning a network: {err}");
                }
            });
        }
    }

    /// The reporter for this request, when 404s count and it can be reported.
    pub(crate) fn new(shared: &Arc<Gate>, pre: &Findings, ip_key: &ClientKey) -> Option<Box<Self>> {
        (shared.targeting.reports_not_found()
            && !pre.skip
            && !pre.probe
            && shared.ban_rule.is_some())
        .then(|| {
            Box::new(NotFoundReporter {
                shared: shared.clone(),
                key: ip_key.clone(),
            })
        })
    }
}

pin_project! {
    /// The inner service's future, reporting a 404 for an unrouted path as an offence (when
    /// [`ProbeBan::not_found_reports`] is on) before the response goes out.
    pub struct NotFoundReport<F, B> {
        #[pin]
        fut: F,
        reporter: Option<Box<NotFoundReporter>>,
        // Boxed: rare, and a large response would make every request's future larger.
        held: Option<Box<(StoreFuture<ReportOutcome>, ServiceResponse<B>, bool)>>,
    }
}

impl<F, B> NotFoundReport<F, B> {
    pub(crate) fn new(fut: F, reporter: Option<Box<NotFoundReporter>>) -> Self {
        NotFoundReport {
            fut,
            reporter,
            held: None,
        }
    }
}

impl<F, B> fmt::Debug for NotFoundReport<F, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NotFoundReport")
    }
}

impl<F, B> Future for NotFoundReport<F, B>
where
    F: Future<Output = Result<ServiceResponse<B>, Error>>,
{
    type Output = Result<ServiceResponse<B>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Some(held) = this.held.as_mut() {
            let report = &mut held.0;
            let r = ready!(Pin::new(report).poll(cx));
            // In shadow mode the "ban" ended as it began: nothing to say.
            if !held.2 {
                log_report(r);
            }
            return match this.held.take() {
                Some(held) => Poll::Ready(Ok(held.1)),
                None => Poll::Ready(Err(actix_web::error::ErrorInternalServerError(
                    "floodgate future polled after completion",
                ))),
            };
        }
        let out = ready!(this.fut.poll(cx));
        let Some(reporter) = this.reporter.take() else {
            return Poll::Ready(out);
        };
        let res = match out {
            Ok(res)
                if res.status() == StatusCode::NOT_FOUND
                    && res.request().match_pattern().is_none() =>
            {
                res
            }
            other => return Poll::Ready(other),
        };
        let Some(real) = reporter.shared.ban_rule else {
            return Poll::Ready(Ok(res));
        };
        let shadow = reporter.shared.shadow;
        let rule = if shadow {
            crate::shadow::shadow_ban_rule(real)
        } else {
            real
        };
        log::debug!(target: reporter.shared.log_target(),
            "floodgate: {} got a 404 for an unrouted path: reported",
            reporter.key.logged()
        );
        let now = reporter.shared.now();
        let mut report = reporter.shared.store.report(&reporter.key, &rule, now);
        match report.take_ready() {
            Some(r) => {
                match r {
                    Ok(ReportOutcome::Banned { .. }) if shadow => {
                        crate::shadow::would_ban(
                            reporter.shared.log_target(),
                            &reporter.key,
                            "404s",
                            real.duration(),
                        );
                        return Poll::Ready(Ok(res));
                    }
                    Ok(ReportOutcome::Banned { until }) => {
                        if let Some(m) = &reporter.shared.metrics {
                            m.ban(&reporter.key, Some(until), crate::metrics::BanKind::Report);
                        }
                        reporter.note_ban(until, now)
                    }
                    _ => {}
                }
                log_report(r);
                Poll::Ready(Ok(res))
            }
            None => {
                *this.held = Some(Box::new((report, res, shadow)));
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        }
    }
}

fn log_report(r: Result<ReportOutcome, crate::error::StoreError>) {
    match r {
        Ok(ReportOutcome::Banned { until }) => {
            log::warn!("floodgate: a client banned until {until} after 404s and probes")
        }
        Ok(_) => {}
        Err(err) => log::warn!("floodgate: store failed while reporting a 404: {err}"),
    }
}
