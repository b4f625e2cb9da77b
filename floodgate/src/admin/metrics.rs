//! `GET /metrics` of the admin service (features `admin` and `metrics`): the Prometheus text
//! of the registry given to [`Admin::metrics`](super::Admin::metrics), behind the same token.

use std::sync::Arc;

use actix_web::http::header::CONTENT_TYPE;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};

use super::problem::problem;
use super::Settings;
use crate::metrics::{exposition, Registry};

/// The registry the admin service exposes.
pub(crate) type Exposed = Option<Arc<Registry>>;

pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/metrics", web::get().to(metrics));
}

async fn metrics(s: web::Data<Settings>) -> HttpResponse {
    let Some(registry) = &s.metrics else {
        return problem(
            StatusCode::NOT_FOUND,
            "No metrics registry was given to this admin service (Admin::metrics).",
        );
    };
    match exposition(registry) {
        Ok(text) => HttpResponse::Ok()
            .insert_header((CONTENT_TYPE, crate::metrics::CONTENT_TYPE))
            .body(text),
        Err(_) => problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            "The metrics could not be written.",
        ),
    }
}
