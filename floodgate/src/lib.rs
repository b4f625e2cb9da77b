//! floodgate: rate limiting and abuse banning for actix-web.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod client;
mod clock;
mod error;
mod gatekeeper;
mod middleware;
mod policy;
mod response;
mod route;
mod rules;
mod state;
mod status;
pub mod store;

pub use client::ClientKey;
pub use clock::{Clock, FakeClock, SystemClock, Timestamp};
pub use error::{ConfigError, StoreError};
pub use gatekeeper::{Client, GateKeeper};
pub use middleware::{Floodgate, FloodgateFuture, FloodgateMiddleware};
pub use policy::{Adaptive, Grace, Policy, Punishment, RequestCheck};
pub use response::{Refusal, RefusalKind, RATELIMIT, RATELIMIT_POLICY};
pub use route::{RouteRules, RouteRulesMiddleware};
pub use rules::{parse_duration, BanRule, Rule};
pub use state::{
    BanReason, ClientState, Decision, LimitInfo, LimitReason, Plan, Quota, ReportOutcome, ScopeId,
};
pub use status::{BanStatus, ClientStatus, WindowStatus};
pub use store::failover::FailoverStore;
pub use store::memory::{MemoryStore, MemoryStoreBuilder};
#[cfg(feature = "redis")]
pub use store::redis::{RedisStore, RedisStoreBuilder};
pub use store::{Store, StoreFailure, StoreFuture};

#[cfg(feature = "macros")]
pub use floodgate_macros::{bypass, rate_limited, specific};

#[doc(hidden)]
pub mod __private {
    pub use crate::policy::PolicyOverrides;
    pub use crate::route::{PolicySpec, RouteSpec};
    pub use std::borrow::Cow;
    pub use std::time::Duration;
}
