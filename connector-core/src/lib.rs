//! The connector core: what every source connector inherits.
//!
//! - the connector contract ([`Connector`] for authors, [`DynConnector`] for the
//!   daemon, joined by a blanket impl; [`Factory`] for the registry);
//! - the HTTP stack ([`HttpClient`]): origin check → retry (full jitter,
//!   `Retry-After`) → auth (cached, refreshed before expiry, 401 handling) →
//!   per-attempt timeout → transport;
//! - [`Pagination`] strategies and [`PageToken`]s that watermarks store;
//! - the [`RawStore`]: write-once, content-addressed objects over `object_store`;
//! - error classification in one place ([`Error::class`]).
//!
//! ```
//! use connector_core::{Pagination, PageToken, PageFacts};
//! let p = Pagination::offset_limit(100);
//! let next = p.next(&p.first(), PageFacts { records: 100, total: Some(250) });
//! assert_eq!(next, Some(PageToken::Offset { offset: 100 }));
//! ```

pub mod auth;
mod connector;
mod error;
pub mod http;
mod pagination;
mod raw_store;
pub mod records;
pub mod retry;
pub mod secret;

pub use auth::AuthConfig;
pub use connector::{Connector, ConnectorFactory, DynConnector, Factory, StreamDef, SyncMode};
pub use error::{Error, ErrorClass, snippet};
pub use http::{HttpClient, HttpSettings, RequestMeta, Response};
pub use pagination::{PageFacts, PageToken, Pagination};
pub use raw_store::{RawStore, StoredObject};
pub use retry::RetryPolicy;
