//! The connector core: what every source connector inherits.
//!
//! - the connector contract ([`Connector`] for authors, [`DynConnector`] for the
//!   daemon, joined by a blanket impl; [`Factory`] for the registry), whose
//!   streams are declared as data ([`StreamDef`]: the [`Request`] of each
//!   page, where its [`Records`] are, how it says a record was [`Deleted`],
//!   its incremental state);
//! - the HTTP stack ([`HttpClient`]): origin check → events → call deadline →
//!   retry (full jitter, `Retry-After`, reset headers, deferral) → circuit
//!   breaker → rate limiter (token bucket, in-flight cap, AIMD) → auth (every
//!   strategy in [`auth`], cached, refreshed before expiry, 401 handling) →
//!   per-attempt timeout → transport;
//! - [`Pagination`] strategies, [`PageToken`]s that watermarks store, and the
//!   [`Pager`] that walks a stream's pages;
//! - named [`events`] with Prometheus [`metrics`];
//! - the [`RawStore`]: write-once, content-addressed objects over `object_store`;
//! - error classification in one place ([`Error::class`]).
//!
//! ```
//! use connector_core::{Pagination, PageToken, PageFacts};
//! let p = Pagination::offset_limit(100);
//! let next = p.next(&p.first(), &PageFacts { records: 100, total: Some(250), next: None });
//! assert_eq!(next, Some(PageToken::Offset { offset: 100 }));
//! ```

pub mod auth;
pub mod breaker;
mod connector;
mod error;
pub mod events;
pub mod fetch;
pub mod http;
pub mod metrics;
mod pagination;
pub mod ratelimit;
mod raw_store;
pub mod records;
pub mod retry;
pub mod secret;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod transport;
mod units;

pub use auth::{AuthConfig, CredentialStore};
pub use breaker::{BreakerSettings, BreakerState};
pub use connector::{
    BaseUrl, Body, Connector, ConnectorFactory, CursorTime, Deleted, Details, DynConnector,
    ErrorAnswer, ErrorReading, Factory, Method, PageCtx, ReadError, Records, Request, RequestHook,
    StreamDef, SyncMode, read_nothing, struct_fields,
};
pub use error::{Error, ErrorClass, snippet, sqlstate_is_transient};
pub use fetch::{FetchedPage, Pager};
pub use http::{
    ClientParts, DEFAULT_REDACT_PARAMS, HttpClient, HttpSettings, RequestMeta, Response,
};
pub use pagination::{LinkAt, PageFacts, PageToken, Pagination};
pub use ratelimit::RateLimitSettings;
pub use raw_store::{ObjectProblem, RawStore, StoredObject};
pub use retry::RetryPolicy;
pub use units::parse_duration;
