//! The connector contract: a typed trait for authors, an erased trait for the
//! daemon's registry, and a blanket impl between them.

use chrono::{DateTime, Utc};
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
    /// unchanged records (same content hash) write nothing. After a complete,
    /// successful pull, what it did not see is swept (soft-deleted).
    FullRefresh,
    /// Each pull asks only for what changed since the stream's state, an
    /// opaque JSON value core stores in the watermark and hands back to the
    /// request (bounds are inclusive: the overlap is absorbed by content-hash
    /// dedupe).
    Incremental {
        /// The query parameter the bound is sent in, as RFC 3339 (`+` goes
        /// out as `%2B`); `None` when the stream's [`RequestHook`] puts it in
        /// the request itself (a body filter, an OData literal).
        since_param: Option<&'static str>,
        /// Where the server issues the next state itself (BambooHR's
        /// `latest`, a delta token): the value at this pointer of the pull's
        /// last page becomes the state. Without it the state is the time
        /// `min(max record cursor seen, server Date − lag)`.
        token_at: Option<&'static str>,
        /// The state is the compound `(modified, id)` of the last record, for
        /// a source that orders (and filters) by both: `{"modified": RFC 3339,
        /// "id": "…"}`, the largest pair seen (ids compared as numbers when
        /// both are), held at `(server Date − lag, null)`. The stream's
        /// [`RequestHook`] formats it (`modified > m or (modified = m and id > i)`;
        /// an `id` of null means `modified >= m`).
        keyset: bool,
        lag: Duration,
    },
}

impl SyncMode {
    /// Incremental by a time bound sent in `since_param`.
    pub fn since(since_param: &'static str, lag: Duration) -> Self {
        Self::Incremental {
            since_param: Some(since_param),
            token_at: None,
            keyset: false,
            lag,
        }
    }
}

/// Where a page body holds its records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Records {
    /// A JSON array at this pointer (`""`: the body is the array).
    Array(&'static str),
    /// The values of the object at this pointer, keyed by id
    /// (`{"123": {...}, "124": {...}}`), in body order.
    Values(&'static str),
    /// The body is one record.
    Body,
}

impl Records {
    /// The form stored with each raw page (`raw_page.record_path`), read back
    /// by [`crate::records::split_records`]: the pointer for an array,
    /// `values:` + pointer, or `body:`.
    pub fn stored(&self) -> String {
        match self {
            Records::Array(p) => (*p).to_owned(),
            Records::Values(p) => format!("values:{p}"),
            Records::Body => "body:".to_owned(),
        }
    }
}

/// How a source says a record was deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deleted {
    /// A record whose value at `pointer` is one of `values` is a tombstone
    /// of its primary key (BambooHR's changed feed: `"action": "Deleted"`).
    When {
        pointer: &'static str,
        values: &'static [&'static str],
    },
}

/// A stream whose requests come from another stream's records: the ids
/// at `id_at` in the records of stream `of` (of the same connection, synced
/// before it in the same run), asked for `batch` at a time. The stream's
/// [`RequestHook`] puts each batch in the request ([`PageCtx::ids`]: a
/// filter, a path, a query). Its state is how far it got in `of`'s stored
/// pages, so ids of a run that failed are asked for again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Details {
    pub of: &'static str,
    pub id_at: &'static str,
    pub batch: usize,
}

/// An HTTP method a stream may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Method {
    #[default]
    Get,
    Post,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
        }
    }
}

/// A request body.
#[derive(Clone, Debug, PartialEq)]
pub enum Body {
    /// Sent as `application/json`.
    Json(serde_json::Value),
    /// Sent as `application/x-www-form-urlencoded` (and signed by OAuth 1).
    Form(Vec<(String, String)>),
}

impl Body {
    /// The bytes sent and their content type.
    pub fn encode(&self) -> (Vec<u8>, &'static str) {
        match self {
            Body::Json(v) => (v.to_string().into_bytes(), "application/json"),
            Body::Form(pairs) => (
                url::form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(pairs)
                    .finish()
                    .into_bytes(),
                "application/x-www-form-urlencoded",
            ),
        }
    }
}

/// One page's request, as a stream builds it and the HTTP stack sends it
/// (auth is added by the stack, never here).
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    pub method: Method,
    /// On the connector's origin; carries the query.
    pub url: Url,
    pub headers: Vec<(String, String)>,
    pub body: Option<Body>,
    /// Safe to send again after a timeout or a dropped connection: every
    /// GET, and a POST that only reads (a report, a query). A request that
    /// is not idempotent is not retried once it may have reached the source.
    pub idempotent: bool,
}

impl Request {
    /// A GET of `url`.
    pub fn get(url: Url) -> Self {
        Self {
            method: Method::Get,
            url,
            headers: Vec::new(),
            body: None,
            idempotent: true,
        }
    }
}

/// What a page's request is built from, besides the page token.
#[derive(Clone, Copy, Debug, Default)]
pub struct PageCtx<'a> {
    /// The stream's incremental state (`None` on a first, full pull): an
    /// RFC 3339 string for time bounds, the server's token otherwise.
    pub since: Option<&'a serde_json::Value>,
    /// The partition this run of the stream pulls ([`StreamDef::partition`]).
    pub partition: Option<&'a str>,
    /// The batch of ids a detail stream asks for ([`StreamDef::details`]).
    pub ids: Option<&'a [String]>,
    /// Under [`crate::Pagination::Keyset`], where this page starts: the
    /// largest key of the page before, `{"modified": …, "id": …}`; `None`
    /// on a pull's first page.
    pub after: Option<&'a serde_json::Value>,
    /// Under [`StreamDef::snapshot`], the moment every page of this pull is
    /// answered as of (the same for each page, and for a pull resumed after
    /// a crash); `None` otherwise.
    pub as_of: Option<DateTime<Utc>>,
}

impl PageCtx<'_> {
    /// [`as_of`](Self::as_of) as RFC 3339, whole seconds, UTC.
    pub fn as_of_text(&self) -> Option<String> {
        self.as_of
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
    }

    /// The state as text (a time bound or a string token).
    pub fn since_text(&self) -> Option<String> {
        self.since.map(|v| match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    }
}

/// The function of a [`CursorTime`].
pub type ParseCursor = dyn Fn(&str) -> Option<DateTime<Utc>> + Send + Sync;

/// How a stream reads its record cursor's text as a time, when it is
/// neither RFC 3339 nor OData's `/Date(ms)/` (the default,
/// [`crate::fetch::cursor_time`]): a local time without an offset, read in
/// the source's configured time zone (NetSuite's `TO_CHAR` dates).
#[derive(Clone)]
pub struct CursorTime(pub Arc<ParseCursor>);

impl CursorTime {
    pub fn new(f: impl Fn(&str) -> Option<DateTime<Utc>> + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }
}

impl fmt::Debug for CursorTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CursorTime")
    }
}

/// The function of a [`RequestHook`].
pub type BuildRequest = dyn Fn(&mut Request, &PageCtx<'_>) -> Result<(), Error> + Send + Sync;

/// A stream's own step in building each page's request: it receives the
/// request core built from the declaration and changes what it needs
/// (method, body, headers, a bound formatted the source's way).
#[derive(Clone)]
pub struct RequestHook(pub Arc<BuildRequest>);

impl RequestHook {
    pub fn new(
        f: impl Fn(&mut Request, &PageCtx<'_>) -> Result<(), Error> + Send + Sync + 'static,
    ) -> Self {
        Self(Arc::new(f))
    }
}

impl fmt::Debug for RequestHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RequestHook")
    }
}

/// One stream of a connector, declared as data: everything core needs to
/// request, page, decode and checkpoint it. Start from [`StreamDef::get`] or
/// [`StreamDef::post`] and set what differs:
///
/// ```
/// use connector_core::{Pagination, Records, StreamDef};
/// let s = StreamDef {
///     records: Records::Array("/data"),
///     pagination: Pagination::offset_limit(100),
///     ..StreamDef::get("workers", "v1/workers")
/// };
/// assert_eq!(s.primary_key, "/id");
/// ```
#[derive(Clone, Debug)]
pub struct StreamDef {
    pub name: &'static str,
    pub method: Method,
    /// Path of the endpoint relative to the connector's base URL (no leading
    /// `/`; the base is taken as a directory, with or without a final `/`).
    pub path: String,
    /// Fixed query parameters sent with every page.
    pub query: Vec<(String, String)>,
    /// Fixed headers sent with every page (`Accept: application/json` is core's).
    pub headers: Vec<(String, String)>,
    /// The body sent with every page (a report definition, a query).
    pub body: Option<Body>,
    /// A POST that only reads is declared idempotent, so it is retried
    /// (GETs always are).
    pub idempotent: bool,
    /// Where a page body holds its records.
    pub records: Records,
    pub pagination: Pagination,
    /// JSON pointer of a record's primary key (a string or a number); a
    /// compound key lists its parts' pointers separated by commas
    /// (`"/ControllingArea,/CostCenter,/ValidityEndDate"`), read by
    /// [`crate::records::key_at`] and joined by [`crate::records::join_key`].
    pub primary_key: &'static str,
    /// JSON pointer of a record's source-modified time, when it has one.
    pub cursor: Option<&'static str>,
    /// How the cursor's text is read as a time, when not RFC 3339 or `/Date(ms)/`.
    pub cursor_parse: Option<CursorTime>,
    /// How the source says a record was deleted, when it does.
    pub deleted: Option<Deleted>,
    pub mode: SyncMode,
    /// The stream's own step in building each request.
    pub request: Option<RequestHook>,
    /// The partition this instance of the stream pulls (a company code, a
    /// subsidiary): a connector returns one `StreamDef` per configured
    /// partition ([`StreamDef::partitions`]), each with its own watermark,
    /// raw object keys and lease, under [`StreamDef::key`]. The
    /// [`RequestHook`] reads it from [`PageCtx::partition`].
    pub partition: Option<String>,
    /// Requests made from another stream's records (ids from a change feed
    /// → detail requests, batched) instead of from a state of its own.
    pub details: Option<Details>,
    /// The source answers a request as of a moment it names (Workday's
    /// `As_Of_Entry_DateTime` with `Updated_Through`): core fixes one moment
    /// per pull ([`PageCtx::as_of`]) and the stream's [`RequestHook`] sends
    /// it with every page. Changes made during the pull are then not in it
    /// (the next pull asks from before that moment), so an incremental
    /// stream may page by offset or page number without pages shifting.
    pub snapshot: bool,
}

impl StreamDef {
    /// A full-refresh GET of `path` whose body is an array of records with
    /// an `/id`, on one page.
    pub fn get(name: &'static str, path: impl Into<String>) -> Self {
        Self {
            name,
            method: Method::Get,
            path: path.into(),
            query: Vec::new(),
            headers: Vec::new(),
            body: None,
            idempotent: true,
            records: Records::Array(""),
            pagination: Pagination::Single,
            primary_key: "/id",
            cursor: None,
            cursor_parse: None,
            deleted: None,
            mode: SyncMode::FullRefresh,
            request: None,
            partition: None,
            details: None,
            snapshot: false,
        }
    }

    /// The stream's identity where state is kept (watermark, raw objects,
    /// lease, ledger): its name, or `name@partition`.
    pub fn key(&self) -> String {
        match &self.partition {
            Some(p) => format!("{}@{p}", self.name),
            None => self.name.to_owned(),
        }
    }

    /// One copy of this stream per partition (none: the stream as it is).
    pub fn partitions<S: AsRef<str>>(self, partitions: &[S]) -> Vec<StreamDef> {
        if partitions.is_empty() {
            return vec![self];
        }
        partitions
            .iter()
            .map(|p| StreamDef {
                partition: Some(p.as_ref().to_owned()),
                ..self.clone()
            })
            .collect()
    }

    /// Like [`get`](Self::get), a POST of `body` that only reads (idempotent).
    pub fn post(name: &'static str, path: impl Into<String>, body: Body) -> Self {
        Self {
            method: Method::Post,
            body: Some(body),
            ..Self::get(name, path)
        }
    }

    /// Checks the definition as data, whenever a connector is built from
    /// config ([`Factory`]) and in the conformance suite:
    /// JSON pointers are pointers, an incremental stream names its record
    /// cursor (or the server's token), and it does not page by offset or page
    /// number. Records modified during such a pull move within the result
    /// set, shifting every later page: a record is skipped, and the next
    /// pull's lower bound is already past it. Errors name the stream and the fix.
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
        match self.records {
            Records::Array(p) | Records::Values(p) => pointer("records", p, true)?,
            Records::Body => {}
        }
        for part in self.primary_key.split([',', '|']) {
            pointer("primary_key", part, false)?;
        }
        if let Some(c) = self.cursor {
            pointer("cursor", c, false)?;
        }
        if let Some(d) = self.details {
            pointer("details id_at", d.id_at, false)?;
            if d.batch == 0 || d.batch > 10_000 {
                return Err(bad(format!(
                    "details batch {} must be between 1 and 10000",
                    d.batch
                )));
            }
            if d.of == self.name {
                return Err(bad("a detail stream cannot read its own records".into()));
            }
            if self.request.is_none() {
                return Err(bad(
                    "a detail stream needs a `request` hook that puts each batch of ids in the request"
                        .into(),
                ));
            }
            if !matches!(self.mode, SyncMode::FullRefresh) {
                return Err(bad(
                    "a detail stream's state is its place in the other stream's pages: declare it \
                     SyncMode::FullRefresh"
                        .into(),
                ));
            }
        }
        if let Some(Deleted::When { pointer: p, values }) = self.deleted {
            pointer("deleted pointer", p, false)?;
            if values.is_empty() {
                return Err(bad("`deleted` names no value that marks a tombstone".into()));
            }
        }
        if self.name.is_empty() || self.name.contains(['/', ' ', ':', '@']) {
            return Err(bad(
                "the name must be non-empty, without '/', ':', '@' or spaces".into(),
            ));
        }
        if let Some(p) = &self.partition
            && (p.is_empty()
                || p.len() > 64
                || !p
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
                || p.starts_with('.'))
        {
            return Err(bad(format!(
                "partition {p:?} must be 1 to 64 letters, digits, '-', '_' or '.' (not first): \
                 it keys the partition's watermark and raw objects"
            )));
        }
        if let SyncMode::Incremental {
            token_at,
            since_param,
            keyset,
            ..
        } = self.mode
        {
            if keyset
                && (self.request.is_none()
                    || self.cursor.is_none()
                    || token_at.is_some()
                    || since_param.is_some())
            {
                return Err(bad(
                    "a keyset (modified, id) state needs `cursor` (each record's modified time) and a \
                     `request` hook that formats it (an `id` of null means `modified >= m`), and \
                     neither `token_at` nor `since_param`"
                        .into(),
                ));
            }
            if let Some(t) = token_at {
                pointer("token_at", t, false)?;
            }
            if since_param.is_none() && self.request.is_none() {
                return Err(bad(
                    "an incremental stream sends its bound somewhere: set `since_param`, or a \
                     `request` hook that puts it in the request"
                        .into(),
                ));
            }
            if self.cursor.is_none() && token_at.is_none() {
                return Err(bad(
                    "an incremental stream needs `cursor`, the pointer of each record's modified \
                     time, or `token_at`, where the server issues the next state"
                        .into(),
                ));
            }
            if !self.snapshot
                && matches!(
                    self.pagination,
                    Pagination::OffsetLimit { .. } | Pagination::PageNumber { .. }
                )
            {
                return Err(bad(
                    "an incremental stream cannot page by offset or page number: records modified \
                     during the pull shift the later pages and are skipped for good. Page with a \
                     cursor or next link the source issues (Pagination::Cursor, NextLink, \
                     LinkHeader), page over a snapshot the source answers as of one moment \
                     (`snapshot`), or sync it as SyncMode::FullRefresh"
                        .into(),
                ));
            }
        }
        if self.snapshot && self.request.is_none() {
            return Err(bad(
                "a snapshot stream needs a `request` hook that sends the pull's moment \
                 (PageCtx::as_of) with every page"
                    .into(),
            ));
        }
        Ok(())
    }

    /// The request of the page at `token`: a link token's URL as is (it
    /// carries its own query), else the stream's path with its fixed query,
    /// the incremental bound and the pagination parameters; then the
    /// stream's [`RequestHook`].
    pub fn request(
        &self,
        base: &Url,
        token: &PageToken,
        page: &PageCtx<'_>,
    ) -> Result<Request, Error> {
        let url = if let PageToken::Link { url, .. } = token {
            Url::parse(url).map_err(|e| {
                Error::Config(format!(
                    "stream {}: stored next link is not a URL: {e}",
                    self.name
                ))
            })?
        } else {
            // The base is a directory, whether or not its path ends in `/`.
            let mut dir = base.clone();
            if !dir.path().ends_with('/') {
                dir.set_path(&format!("{}/", dir.path()));
            }
            let mut url = dir.join(&self.path).map_err(|e| {
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
                if let (
                    SyncMode::Incremental {
                        since_param: Some(param),
                        ..
                    },
                    Some(since),
                ) = (self.mode, page.since_text())
                {
                    q.append_pair(param, &since);
                }
                for (k, v) in self.pagination.params(token) {
                    q.append_pair(k, &v);
                }
            }
            if url.query() == Some("") {
                url.set_query(None);
            }
            url
        };
        // A keyset page starts after the key its token carries.
        let after = match (&self.pagination, token) {
            (Pagination::Keyset { .. }, PageToken::Cursor { cursor }) => Some(
                serde_json::from_str::<serde_json::Value>(cursor).map_err(|e| {
                    Error::Config(format!(
                        "stream {}: stored keyset position is not JSON: {e}",
                        self.name
                    ))
                })?,
            ),
            _ => None,
        };
        let page = &PageCtx {
            after: after.as_ref().or(page.after),
            ..*page
        };
        let mut req = Request {
            method: self.method,
            url,
            headers: self.headers.clone(),
            body: self.body.clone(),
            idempotent: self.method == Method::Get || self.idempotent,
        };
        if let Some(hook) = &self.request {
            (hook.0)(&mut req, page)?;
        }
        Ok(req)
    }

    /// A record cursor's text as a time: through [`StreamDef::cursor_parse`]
    /// when the stream has one, else RFC 3339 or OData's `/Date(ms)/`.
    pub fn cursor_time(&self, text: &str) -> Option<DateTime<Utc>> {
        match &self.cursor_parse {
            Some(p) => (p.0)(text),
            None => crate::fetch::cursor_time(text),
        }
    }

    /// The URL of the page at `token` (see [`request`](Self::request)).
    pub fn page_url(
        &self,
        base: &Url,
        token: &PageToken,
        since: Option<&serde_json::Value>,
    ) -> Result<Url, Error> {
        let page = PageCtx {
            since,
            partition: self.partition.as_deref(),
            ..PageCtx::default()
        };
        Ok(self.request(base, token, &page)?.url)
    }
}

/// The whole configuration of a connector that needs only its API root
/// (`base_url = "https://…"`; any other key is refused, naming it).
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaseUrl {
    pub base_url: Url,
}

/// What a connector author implements: typed config in, data logic out.
///
/// # Contract
/// - `new` validates the config and fails with [`Error::Config`] naming the key.
/// - `streams` describes each stream as data (endpoint, records pointer,
///   pagination, primary key, cursor, deletes); it does no I/O. Auth, retries,
///   timeouts, paging, raw storage and watermarks are core's. The canonical
///   entity and mapper a stream feeds are wired outside core (the connector
///   crate implements `canonical_model::Modeled`).
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
    /// Refuses an auth config the source cannot accept, before any request
    /// (NetSuite: TBA whose `realm` is not the account id upper-cased with
    /// `_`). The message names the key and the fix. Default: any.
    fn check_auth(&self, _auth: &crate::AuthConfig) -> Result<(), String> {
        Ok(())
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
    /// The answer means "the credential is refused", whatever its status
    /// (NetSuite's `INVALID_LOGIN`): handled like a 401 (the credential is
    /// refreshed once, then the run needs re-authentication).
    pub unauthorized: bool,
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
    /// The connector's [`Connector::check_auth`].
    fn check_auth(&self, _auth: &crate::AuthConfig) -> Result<(), String> {
        Ok(())
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
    fn check_auth(&self, auth: &crate::AuthConfig) -> Result<(), String> {
        Connector::check_auth(self, auth)
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
