//! The admin API's gate: the allow list, then the Bearer token, compared in constant time.
//! A missing or short token stops the app from starting.

use std::future::{ready, Future, Ready};
use std::net::IpAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{forward_ready, Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::{header, StatusCode};
use actix_web::Error;
use actix_web::HttpMessage;

use super::problem::problem;
use super::session::{auth_of, permits};
use super::{Settings, MIN_TOKEN_LEN};

type LocalBoxFuture<T> = Pin<Box<dyn Future<Output = T>>>;

/// The admin scope's middleware (see the module docs).
pub(crate) struct AdminAuth {
    settings: Arc<Settings>,
}

impl AdminAuth {
    pub(crate) fn new(settings: Arc<Settings>) -> Self {
        AdminAuth { settings }
    }
}

/// Why the admin service cannot start, if it cannot.
fn config_problem(settings: &Settings) -> Option<String> {
    match settings.token.as_deref() {
        None => Some("the admin API has no token (call .token(..)); it never runs open".into()),
        Some(t) if t.len() < MIN_TOKEN_LEN => Some(format!(
            "the admin token is {} bytes long, shorter than {MIN_TOKEN_LEN}; use a long random one",
            t.len()
        )),
        Some(t) if t.chars().any(|c| c.is_whitespace() || c.is_control()) => {
            Some("the admin token holds whitespace or control characters".into())
        }
        _ => None,
    }
}

impl<S, B> Transform<S, ServiceRequest> for AdminAuth
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Transform = AdminAuthMiddleware<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        if let Some(err) = config_problem(&self.settings) {
            let target = self.settings.gatekeeper.shared.log_target();
            log::error!(target: target, "floodgate: setting `token`: {err}; the app does not start");
            eprintln!(
                "floodgate: configuration error: setting `token`: {err}; the app does not start"
            );
            return ready(Err(()));
        }
        ready(Ok(AdminAuthMiddleware {
            service: Rc::new(service),
            settings: self.settings.clone(),
        }))
    }
}

/// The admin scope's middleware service.
pub(crate) struct AdminAuthMiddleware<S> {
    service: Rc<S>,
    settings: Arc<Settings>,
}

/// The address of the operator making `req`, as the floodgate sees clients.
pub(crate) fn operator_ip(settings: &Settings, req: &actix_web::HttpRequest) -> Option<IpAddr> {
    settings
        .gatekeeper
        .shared
        .ip_source
        .client_ip(req.peer_addr().map(|a| a.ip()), req.headers())
}

impl<S, B> Service<ServiceRequest> for AdminAuthMiddleware<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Future = LocalBoxFuture<Result<Self::Response, Self::Error>>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let ip = operator_ip(&self.settings, req.request());
        let shown = ip.map_or_else(|| "an unknown address".to_owned(), |ip| ip.to_string());
        let target = self.settings.gatekeeper.shared.log_target();
        let refusal = if let Some(list) = &self.settings.allow {
            (!ip.is_some_and(|ip| list.contains(ip))).then_some((
                StatusCode::FORBIDDEN,
                "this address may not use the admin API",
            ))
        } else {
            None
        };
        let token = self.settings.token.as_deref().unwrap_or_default();
        let auth = auth_of(token, &req);
        let rel = req
            .path()
            .strip_prefix(self.settings.path.as_str())
            .unwrap_or("");
        let refusal = refusal.or_else(|| {
            (!permits(auth, req.method(), rel)).then_some((
                StatusCode::UNAUTHORIZED,
                "send the admin token as Authorization: Bearer <token>",
            ))
        });
        req.extensions_mut().insert(auth);
        if let Some((status, detail)) = refusal {
            log::warn!(target: target, "floodgate admin: {} {} from {shown} refused ({})",
                req.method(), req.path(), status.as_u16());
            let mut res = problem(status, detail);
            if status == StatusCode::UNAUTHORIZED {
                res.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Bearer realm=\"floodgate\""),
                );
            }
            let res = req.into_response(res).map_into_right_body();
            return Box::pin(async move { Ok(res) });
        }
        let service = self.service.clone();
        Box::pin(async move { service.call(req).await.map(|r| r.map_into_left_body()) })
    }
}
