//! The connector contract: a typed trait for authors, an erased trait for the
//! daemon's registry, and a blanket impl between them.

use canonical_model::{EntityKind, Mapper};
use serde::de::DeserializeOwned;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;
use url::Url;

use crate::{Error, PageToken, Pagination};

/// How a stream is kept in sync.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncMode {
    /// The source has no usable change stamp: every sync pulls everything and
    /// unchanged records (same content hash) write nothing.
    FullRefresh,
    /// Each pull asks only for records modified at or after the high-water
    /// mark, sent as `since_param` (RFC 3339, inclusive: the overlap is
    /// absorbed by content-hash dedupe). The mark after a complete pull is
    /// `min(max cursor seen, server Date − lag)`; the stream's `cursor`
    /// pointer names each record's modified time.
    Incremental {
        since_param: &'static str,
        lag: Duration,
    },
}

/// One stream of a connector: everything core needs to fetch, page and map it.
#[derive(Clone, Debug)]
pub struct StreamDef {
    pub name: &'static str,
    /// Path of the endpoint relative to the connector's base URL (no leading `/`).
    pub path: String,
    /// Fixed query parameters sent with every page.
    pub query: Vec<(String, String)>,
    /// JSON pointer of the records array in a page body.
    pub records_at: &'static str,
    pub pagination: Pagination,
    /// JSON pointer of a record's primary key (a string or a number).
    pub primary_key: &'static str,
    /// JSON pointer of a record's source-modified time, when it has one.
    pub cursor: Option<&'static str>,
    pub mode: SyncMode,
    /// The canonical entity a record of this stream is (the mapper's first output).
    pub entity: EntityKind,
    pub mapper: Arc<dyn Mapper>,
}

impl StreamDef {
    /// Checks the definition as data, whenever a connector is built from
    /// config ([`Factory`]) and in the conformance suite:
    /// JSON pointers are pointers, an incremental stream names its record
    /// cursor, and it does not page by offset or page number. Records
    /// modified during such a pull move within the result set, shifting
    /// every later page: a record is skipped, and the next pull's lower
    /// bound is already past it. Errors name the stream and the fix.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |m: String| Error::Config(format!("stream {}: {m}", self.name));
        let pointer = |what: &str, p: &str, may_be_root: bool| {
            if (p.is_empty() && may_be_root) || p.starts_with('/') {
                Ok(())
            } else {
                Err(bad(format!(
                    "{what} {p:?} is not a JSON pointer (e.g. \"/id\")"
                )))
            }
        };
        pointer("records_at", self.records_at, true)?;
        pointer("primary_key", self.primary_key, false)?;
        if let Some(c) = self.cursor {
            pointer("cursor", c, false)?;
        }
        if self.name.is_empty() || self.name.contains(['/', ' ']) {
            return Err(bad(
                "the name must be non-empty, without '/' or spaces".into()
            ));
        }
        if let SyncMode::Incremental { .. } = self.mode {
            if self.cursor.is_none() {
                return Err(bad(
                    "an incremental stream needs `cursor`, the pointer of each record's modified time".into(),
                ));
            }
            if matches!(
                self.pagination,
                Pagination::OffsetLimit { .. } | Pagination::PageNumber { .. }
            ) {
                return Err(bad(
                    "an incremental stream cannot page by offset or page number: records modified \
                     during the pull shift the later pages and are skipped for good. Page with a \
                     cursor or next link the source issues (Pagination::Cursor, NextLink, \
                     LinkHeader), or sync it as SyncMode::FullRefresh"
                        .into(),
                ));
            }
        }
        Ok(())
    }

    /// The URL of the page at `token`: the link itself for link tokens (it
    /// carries its own query), else the stream's path with its fixed query,
    /// the incremental `since` bound, and the pagination parameters.
    pub fn page_url(
        &self,
        base: &Url,
        token: &PageToken,
        since: Option<&str>,
    ) -> Result<Url, Error> {
        if let PageToken::Link { url } = token {
            return Url::parse(url).map_err(|e| {
                Error::Config(format!(
                    "stream {}: stored next link is not a URL: {e}",
                    self.name
                ))
            });
        }
        let mut url = base.join(&self.path).map_err(|e| {
            Error::Config(format!(
                "stream {}: bad path {:?}: {e}",
                self.name, self.path
            ))
        })?;
        {
            let mut q = url.query_pairs_mut();
            for (k, v) in &self.query {
                q.append_pair(k, v);
            }
            if let (SyncMode::Incremental { since_param, .. }, Some(since)) = (self.mode, since) {
                q.append_pair(since_param, since);
            }
            for (k, v) in self.pagination.params(token) {
                q.append_pair(k, &v);
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        Ok(url)
    }
}

/// What a connector author implements: typed config in, data logic out.
///
/// # Contract
/// - `new` validates the config and fails with [`Error::Config`] naming the key.
/// - `streams` describes each stream as data (endpoint, records pointer,
///   pagination, primary key, cursor, mapper); it does no I/O. Auth, retries,
///   timeouts, paging, raw storage, watermarks and loading are core's.
/// - Stream names are stable: they key watermarks and raw objects.
pub trait Connector: Send + Sync + fmt::Debug + Sized + 'static {
    /// The `connector = "..."` name in the daemon's config.
    const NAME: &'static str;
    /// The connector-specific keys of a `[[connection]]` (auth is core's).
    type Config: DeserializeOwned;
    fn new(config: Self::Config) -> Result<Self, Error>;
    fn base_url(&self) -> &Url;
    fn streams(&self) -> Vec<StreamDef>;
    /// Reads an answer that is not a success when its status alone says too
    /// little: a source that signals throttling with another status (NetSuite:
    /// HTTP 400 with `o:errorCode` `CONCURRENCY_LIMIT_EXCEEDED`), or puts its
    /// reason in a header (BambooHR: `X-BambooHR-Error-Message`). The default
    /// reads nothing: the status decides.
    fn read_error(answer: &ErrorAnswer<'_>) -> ErrorReading {
        read_nothing(answer)
    }
}

/// An answer of the source that is not a success, as a connector sees it.
#[derive(Debug, Clone, Copy)]
pub struct ErrorAnswer<'a> {
    pub status: u16,
    pub headers: &'a reqwest::header::HeaderMap,
    /// The body as received (at most the client's body limit).
    pub body: &'a [u8],
}

/// What a connector reads in an error answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorReading {
    /// The answer means "too many requests", whatever its status: it is
    /// retried, slows the connection down and honours `Retry-After`, like a 429.
    pub throttled: bool,
    /// The source's own explanation, put in the error (scrubbed of secrets).
    pub message: Option<String>,
}

/// A connector's [`Connector::read_error`].
pub type ReadError = fn(&ErrorAnswer<'_>) -> ErrorReading;

/// The default [`ReadError`]: the status decides.
pub fn read_nothing(_answer: &ErrorAnswer<'_>) -> ErrorReading {
    ErrorReading::default()
}

/// The object-safe face of a connector, held by the daemon.
pub trait DynConnector: Send + Sync + fmt::Debug {
    fn name(&self) -> &'static str;
    fn base_url(&self) -> &Url;
    fn streams(&self) -> Vec<StreamDef>;
    /// The connector's [`Connector::read_error`].
    fn error_reader(&self) -> ReadError {
        read_nothing
    }
}

impl<C: Connector> DynConnector for C {
    fn name(&self) -> &'static str {
        C::NAME
    }
    fn base_url(&self) -> &Url {
        Connector::base_url(self)
    }
    fn streams(&self) -> Vec<StreamDef> {
        Connector::streams(self)
    }
    fn error_reader(&self) -> ReadError {
        C::read_error
    }
}

/// Builds connectors of one kind from untyped config: one entry of the
/// daemon's explicit registry list.
pub trait ConnectorFactory: Send + Sync {
    fn name(&self) -> &'static str;
    fn build(&self, config: serde_json::Value) -> Result<Arc<dyn DynConnector>, Error>;
    /// The keys of the connector's own configuration (`Connector::Config`'s
    /// fields), so a typo can be named with the valid keys before anything
    /// is built; empty when they cannot be known.
    fn settings_keys(&self) -> &'static [&'static str] {
        &[]
    }
}

/// The field names of a type deserialized as a struct (`#[derive(Deserialize)]`),
/// read from its `Deserialize` impl without any data; empty for other shapes.
pub fn struct_fields<T: serde::de::DeserializeOwned>() -> &'static [&'static str] {
    use serde::de::{self, Visitor};
    struct Probe<'a>(&'a mut &'static [&'static str]);
    impl<'de> de::Deserializer<'de> for Probe<'_> {
        type Error = de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("probe"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _visitor: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(de::Error::custom("probe"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Probe(&mut fields));
    fields
}

/// The [`ConnectorFactory`] of a typed [`Connector`].
pub struct Factory<C>(PhantomData<fn() -> C>);

impl<C> Factory<C> {
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        Self(PhantomData)
    }
}

impl<C> fmt::Debug for Factory<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Factory")
    }
}

impl<C: Connector> ConnectorFactory for Factory<C> {
    fn name(&self) -> &'static str {
        C::NAME
    }
    fn settings_keys(&self) -> &'static [&'static str] {
        struct_fields::<C::Config>()
    }
    fn build(&self, config: serde_json::Value) -> Result<Arc<dyn DynConnector>, Error> {
        let typed: C::Config = serde_json::from_value(config)
            .map_err(|e| Error::Config(format!("connector {}: {e}", C::NAME)))?;
        let connector = C::new(typed)?;
        for s in Connector::streams(&connector) {
            s.validate()
                .map_err(|e| Error::Config(format!("connector {}: {e}", C::NAME)))?;
        }
        Ok(Arc::new(connector))
    }
}

fn _obj_safe(_: Box<dyn DynConnector>, _: Box<dyn ConnectorFactory>) {}

#[cfg(test)]
mod tests {
    #[test]
    fn struct_fields_lists_the_keys_of_a_derived_struct() {
        #[derive(serde::Deserialize)]
        #[allow(dead_code)]
        struct Settings {
            base_url: String,
            #[serde(default)]
            page_size: u32,
            #[serde(rename = "tenantName")]
            tenant: String,
        }
        assert_eq!(
            super::struct_fields::<Settings>(),
            ["base_url", "page_size", "tenantName"]
        );
        assert!(super::struct_fields::<std::collections::BTreeMap<String, u32>>().is_empty());
    }
}
