//! Test kit (feature `testkit`): a mock source that replays recorded pages
//! with scripted faults, and the conformance suite every connector runs.
//!
//! A connector's `tests/conformance.rs` is one call (here for any connector
//! `C` whose config takes a `base_url`; a real test names its own type under
//! `#[tokio::test(start_paused = true)]`, as
//! `examples/minimal-connector/tests/conformance.rs` does):
//!
//! ```no_run
//! use connector_core::testkit::{Capabilities, Suite};
//! use connector_core::{Connector, DynConnector, Error};
//! use std::path::PathBuf;
//!
//! async fn conformance<C: Connector + 'static>() {
//!     let pages = Suite::read_pages(&[
//!         PathBuf::from("fixtures/pages/1.json"),
//!         PathBuf::from("fixtures/pages/2.json"),
//!     ]);
//!     let caps = Capabilities {
//!         body_driven_paging: true,
//!         next_links: true,
//!         incremental: false,
//!         deletes: false,
//!     };
//!     Suite::new("workers", pages, caps, |base| {
//!         let config = serde_json::from_value(serde_json::json!({ "base_url": base }))
//!             .map_err(|e| Error::Config(e.to_string()))?;
//!         Ok(Box::new(C::new(config)?) as Box<dyn DynConnector>)
//!     })
//!     // The connector's mapper, as `canonical_model::golden_line` renders it.
//!     .golden("fixtures/workers.golden.json", "workers@1", |record| Ok(record.to_string()))
//!     .run()
//!     .await
//!     .assert_passed();
//! }
//! ```
//!
//! Fixture pages are the recorded bodies in order; `{{base}}` in a body is
//! replaced by the mock's URL (for next links). Each check reports passed,
//! failed (with why) or **off**: switched off by a [`Capabilities`] flag the
//! connector sets explicitly, and printed as such, never skipped silently.

pub mod hostile;

use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use url::Url;
use wiremock::matchers::{method, path as path_is};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::auth::{AuthConfig, CredentialStore, MemoryCredentialStore};
use crate::fetch::page_facts;
use crate::{DynConnector, Error, HttpClient, HttpSettings, PageToken, Pager, RawStore, StreamDef};

/// What a connector's API can do; a check that needs a missing capability is
/// reported as switched off.
#[derive(Clone, Copy, Debug)]
pub struct Capabilities {
    /// Next pages come from the body or a header (cursor or link), so a
    /// source can send a loop or a link to another origin.
    pub body_driven_paging: bool,
    /// The next page is a URL (link strategies): cross-origin links are possible.
    pub next_links: bool,
    /// The stream is incremental: a stored state bounds the next pull.
    pub incremental: bool,
    /// The source reports deletions (tombstones) on this stream.
    pub deletes: bool,
}

/// A scripted fault, injected on one page.
#[derive(Clone, Debug)]
pub enum Fault {
    /// `429` with `Retry-After: secs`, once.
    RateLimited { retry_after_secs: u64 },
    /// `count` answers of `status` (5xx) in a row.
    ServerErrors { status: u16, count: u64 },
    /// No answer within the attempt timeout, once.
    Timeout,
    /// The body cut in half, once.
    Truncated,
    /// A complete body that is not JSON, always.
    Malformed,
    /// `401` once: the access token expired mid-run.
    TokenExpired,
    /// A data error (`422`), always.
    DataError,
}

/// One page of a mock source, and how it is requested.
#[derive(Clone, Debug)]
struct MockPage {
    req: crate::Request,
    body: String,
}

/// A wiremock source that serves a stream's recorded pages at the URLs the
/// stream's pagination asks for, plus an OAuth2 token endpoint that rotates
/// the refresh token on every grant.
pub struct MockSource {
    pub server: MockServer,
    pages: Vec<MockPage>,
}

impl fmt::Debug for MockSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "MockSource({}, {} pages)",
            self.server.uri(),
            self.pages.len()
        )
    }
}

/// Matches a request whose query has exactly these pairs (wiremock's
/// `query_param` only checks that a pair is present).
struct ExactQuery(BTreeMap<String, String>);

impl wiremock::Match for ExactQuery {
    fn matches(&self, r: &wiremock::Request) -> bool {
        r.url.query_pairs().into_owned().collect::<BTreeMap<_, _>>() == self.0
    }
}

/// Matches a request whose body is exactly this one (JSON bodies compared as
/// JSON values, so key order does not matter); `None`: an empty body.
struct ExactBody(Option<Vec<u8>>);

impl wiremock::Match for ExactBody {
    fn matches(&self, r: &wiremock::Request) -> bool {
        match &self.0 {
            None => r.body.is_empty(),
            Some(want) => {
                let as_json = |b: &[u8]| serde_json::from_slice::<Value>(b).ok();
                match (as_json(want), as_json(&r.body)) {
                    (Some(a), Some(b)) => a == b,
                    _ => want == &r.body,
                }
            }
        }
    }
}

/// The mock's token endpoint path.
pub const TOKEN_PATH: &str = "/oauth2/token";

impl MockSource {
    /// Starts a source for `def`'s pages on `base` (the connector's base URL,
    /// on the mock's origin).
    pub async fn start(
        server: MockServer,
        def: &StreamDef,
        base: &Url,
        bodies: &[String],
    ) -> Result<Self, String> {
        let uri = server.uri();
        let mut pages = Vec::new();
        let mut token = def.pagination.first();
        for (i, raw) in bodies.iter().enumerate() {
            let body = raw.replace("{{base}}", &uri);
            let req = def
                .request(
                    base,
                    &token,
                    &crate::PageCtx {
                        partition: def.partition.as_deref(),
                        ..Default::default()
                    },
                )
                .map_err(|e| e.to_string())?;
            let facts = page_facts(def, &req.url, base, &body, &Default::default())
                .map_err(|e| format!("fixture page {i}: {e}"))?;
            pages.push(MockPage { req, body });
            match def.pagination.next(&token, &facts) {
                Some(n) => token = n,
                None if i + 1 < bodies.len() => {
                    return Err(format!(
                        "fixture page {i} is the last by its pagination, but {} follow",
                        bodies.len() - i - 1
                    ));
                }
                None => {}
            }
        }
        for p in &pages {
            Self::matcher(p)
                .respond_with(ResponseTemplate::new(200).set_body_string(p.body.clone()))
                .with_priority(10)
                .mount(&server)
                .await;
        }
        // Each grant answers a new access token and a new refresh token.
        let n = Arc::new(std::sync::atomic::AtomicU64::new(0));
        Mock::given(method("POST"))
            .and(path_is(TOKEN_PATH))
            .respond_with(move |_: &wiremock::Request| {
                let i = n.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                ResponseTemplate::new(200).set_body_json(serde_json::json!({
                    "access_token": format!("at-{i}"), "token_type": "Bearer",
                    "expires_in": 3600, "refresh_token": format!("rt-{i}")
                }))
            })
            .mount(&server)
            .await;
        Ok(Self { server, pages })
    }

    /// Matches the page's request exactly: method, path, query and body.
    fn matcher(p: &MockPage) -> wiremock::MockBuilder {
        Mock::given(method(p.req.method.as_str()))
            .and(path_is(p.req.url.path()))
            .and(ExactQuery(p.req.url.query_pairs().into_owned().collect()))
            .and(ExactBody(p.req.body.as_ref().map(|b| b.encode().0)))
    }

    pub fn pages(&self) -> usize {
        self.pages.len()
    }

    /// Injects `fault` on page `index` (ahead of the normal answer).
    pub async fn inject(&self, index: usize, fault: Fault) {
        let p = &self.pages[index];
        let (resp, times) = match fault {
            Fault::RateLimited { retry_after_secs } => (
                ResponseTemplate::new(429)
                    .insert_header("Retry-After", retry_after_secs.to_string().as_str()),
                Some(1),
            ),
            Fault::ServerErrors { status, count } => (ResponseTemplate::new(status), Some(count)),
            Fault::Timeout => (
                ResponseTemplate::new(200)
                    .set_body_string(p.body.clone())
                    .set_delay(Duration::from_secs(3600)),
                Some(1),
            ),
            Fault::Truncated => (
                ResponseTemplate::new(200).set_body_string(p.body[..p.body.len() / 2].to_owned()),
                Some(1),
            ),
            Fault::Malformed => (
                ResponseTemplate::new(200).set_body_string("<html>maintenance</html>"),
                None,
            ),
            Fault::TokenExpired => (ResponseTemplate::new(401), Some(1)),
            Fault::DataError => (
                ResponseTemplate::new(422).set_body_string("{\"error\":\"bad filter\"}"),
                None,
            ),
        };
        let m = Self::matcher(p).respond_with(resp).with_priority(1);
        match times {
            Some(n) => m.up_to_n_times(n).mount(&self.server).await,
            None => m.mount(&self.server).await,
        }
    }

    /// Replaces page `index`'s body (e.g. a next link to a loop or another origin).
    pub async fn replace_body(&self, index: usize, body: String) {
        Self::matcher(&self.pages[index])
            .respond_with(ResponseTemplate::new(200).set_body_string(body))
            .with_priority(1)
            .mount(&self.server)
            .await;
    }

    pub fn body(&self, index: usize) -> &str {
        &self.pages[index].body
    }

    /// Requests the source received for page `index`.
    pub async fn hits(&self, index: usize) -> usize {
        use wiremock::Match;
        let p = &self.pages[index];
        let query = ExactQuery(p.req.url.query_pairs().into_owned().collect());
        let body = ExactBody(p.req.body.as_ref().map(|b| b.encode().0));
        self.server
            .received_requests()
            .await
            .unwrap_or_default()
            .iter()
            .filter(|r| {
                r.method.as_str() == p.req.method.as_str()
                    && r.url.path() == p.req.url.path()
                    && query.matches(r)
                    && body.matches(r)
            })
            .count()
    }

    pub async fn token_grants(&self) -> usize {
        self.server
            .received_requests()
            .await
            .unwrap_or_default()
            .iter()
            .filter(|r| r.url.path() == TOKEN_PATH)
            .count()
    }
}

/// Builds the connector under test for a base URL (the mock's).
pub type Build = Box<dyn Fn(&str) -> Result<Box<dyn DynConnector>, Error> + Send + Sync>;

/// A record's mapping as one golden line (`Err`: why the record's mapping
/// breaks the contract, e.g. a value without provenance). Core knows no
/// canonical model: the connector's test passes its mapper in this form
/// (`canonical_model::golden_line`).
pub type MapRecord = Arc<dyn Fn(&Value) -> Result<String, String> + Send + Sync>;

/// The golden mapping check of a suite.
#[derive(Clone)]
pub struct Golden {
    /// Golden mapping output; rewritten when `BLESS=1`.
    pub path: PathBuf,
    /// The mapping version's name, written at the top of the file.
    pub mapping: String,
    pub map: MapRecord,
}

impl fmt::Debug for Golden {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Golden({}, {})", self.mapping, self.path.display())
    }
}

/// The conformance suite for one stream of a connector.
pub struct Suite {
    pub stream: &'static str,
    pub pages: Vec<String>,
    pub golden: Option<Golden>,
    pub caps: Capabilities,
    build: Build,
}

impl fmt::Debug for Suite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Suite({})", self.stream)
    }
}

/// How one check ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Passed,
    Failed(String),
    /// Switched off by this capability flag.
    Off(&'static str),
}

/// Every check's verdict, printed as a table.
#[derive(Debug, Default)]
pub struct Report(pub Vec<(&'static str, Verdict)>);

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, v) in &self.0 {
            match v {
                Verdict::Passed => writeln!(f, "  pass  {name}")?,
                Verdict::Failed(why) => writeln!(f, "  FAIL  {name}: {why}")?,
                Verdict::Off(flag) => writeln!(f, "  off   {name} (capability `{flag}` is false)")?,
            }
        }
        Ok(())
    }
}

impl Report {
    /// Panics with the whole table when a check failed; prints it otherwise.
    pub fn assert_passed(&self) {
        println!("conformance:\n{self}");
        assert!(
            self.0.iter().all(|(_, v)| !matches!(v, Verdict::Failed(_))),
            "conformance checks failed:\n{self}"
        );
    }
    pub fn verdict(&self, name: &str) -> Option<&Verdict> {
        self.0.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }
}

macro_rules! ensure {
    ($cond:expr, $($why:tt)*) => {
        if !$cond {
            return Err(format!($($why)*));
        }
    };
}

/// What a walk over the stream produced.
struct Walk {
    pages: Vec<(PageToken, bytes::Bytes)>,
    error: Option<Error>,
    /// Pages handed over as unparseable, with why.
    unparseable: Vec<(PageToken, String)>,
    /// Why the pull could not go on past a page.
    stuck: Option<String>,
    elapsed: Duration,
}

impl Suite {
    pub fn new(
        stream: &'static str,
        pages: Vec<String>,
        caps: Capabilities,
        build: impl Fn(&str) -> Result<Box<dyn DynConnector>, Error> + Send + Sync + 'static,
    ) -> Self {
        Self {
            stream,
            pages,
            golden: None,
            caps,
            build: Box::new(build),
        }
    }

    /// Adds the golden mapping checks: each record's line from `map`,
    /// compared with the file at `path` (`BLESS=1` rewrites it).
    pub fn golden(
        mut self,
        path: impl Into<PathBuf>,
        mapping: impl Into<String>,
        map: impl Fn(&Value) -> Result<String, String> + Send + Sync + 'static,
    ) -> Self {
        self.golden = Some(Golden {
            path: path.into(),
            mapping: mapping.into(),
            map: Arc::new(map),
        });
        self
    }

    /// Reads fixture pages from files, in order.
    pub fn read_pages(paths: &[PathBuf]) -> Vec<String> {
        paths
            .iter()
            .map(|p| {
                std::fs::read_to_string(p)
                    .unwrap_or_else(|e| panic!("fixture {}: {e}", p.display()))
            })
            .collect()
    }

    /// A fresh mock source, connector and stream.
    async fn setup(&self) -> Result<(MockSource, Box<dyn DynConnector>, StreamDef), String> {
        let server = MockServer::start().await;
        let connector = (self.build)(&server.uri()).map_err(|e| e.to_string())?;
        let def = connector
            .streams()
            .into_iter()
            .find(|d| d.name == self.stream)
            .ok_or_else(|| format!("the connector has no stream {:?}", self.stream))?;
        def.validate().map_err(|e| e.to_string())?;
        let mock = MockSource::start(server, &def, connector.base_url(), &self.pages).await?;
        Ok((mock, connector, def))
    }

    fn client(
        &self,
        mock: &MockSource,
        connector: &dyn DynConnector,
        tweak: impl FnOnce(&mut HttpSettings),
        store: Arc<dyn CredentialStore>,
    ) -> Result<HttpClient, String> {
        let mut s = HttpSettings {
            // Paused time: the clock jumps while loopback I/O is pending, so the
            // elapsed-time bound is generous and the per-attempt timeout is set
            // only by the timeout check.
            attempt_timeout: None,
            call_timeout: None,
            ..HttpSettings::default()
        };
        s.retry = s.retry.with_seed(11);
        s.retry.max_elapsed = Duration::from_secs(86_400);
        s.breaker.consecutive_failures = 1000;
        tweak(&mut s);
        let auth: AuthConfig = serde_json::from_value(serde_json::json!({
            "strategy": "oauth2_refresh_token",
            "token_url": format!("{}{TOKEN_PATH}", mock.server.uri()),
            "client_id": "conformance", "client_secret": "cs-conformance", "refresh_token": "rt-0"
        }))
        .map_err(|e| e.to_string())?;
        HttpClient::connect("conformance", connector, &auth, s, store).map_err(|e| e.to_string())
    }

    async fn walk(
        http: HttpClient,
        def: &StreamDef,
        start: PageToken,
        max_pages: Option<usize>,
    ) -> Walk {
        let t0 = Instant::now();
        let mut pager = Pager::new(http, def.clone(), start, None, 2);
        let mut pages = Vec::new();
        let mut error = None;
        let mut unparseable = Vec::new();
        let mut stuck = None;
        while let Some(p) = pager.next_page().await {
            match p {
                Ok(p) => {
                    if let Some(why) = p.unparseable {
                        unparseable.push((p.token.clone(), why));
                    }
                    stuck = stuck.or(p.stuck);
                    pages.push((p.token, p.response.body));
                    if max_pages.is_some_and(|m| pages.len() >= m) {
                        break;
                    }
                }
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        Walk {
            pages,
            error,
            unparseable,
            stuck,
            elapsed: t0.elapsed(),
        }
    }

    /// Runs every check on a fresh mock source each.
    pub async fn run(&self) -> Report {
        let mut report = Report::default();
        macro_rules! check {
            // Run only when the capability is on; reported `off` otherwise.
            ($name:literal, if $flag:ident, $body:expr) => {
                if self.caps.$flag {
                    check!($name, $body);
                } else {
                    report.0.push(($name, Verdict::Off(stringify!($flag))));
                }
            };
            ($name:literal, $body:expr) => {{
                let r: Result<(), String> = async { $body }.await;
                report.0.push((
                    $name,
                    match r {
                        Ok(()) => Verdict::Passed,
                        Err(e) => Verdict::Failed(e),
                    },
                ));
            }};
            ($name:literal, off $flag:literal) => {
                report.0.push(($name, Verdict::Off($flag)));
            };
        }
        check!(
            "pagination reaches the last page, each page once",
            self.check_full_walk().await
        );
        check!(
            "resume after a crash at a page boundary loses and duplicates nothing",
            self.check_resume().await
        );
        check!(
            "5xx bursts are retried; a data error fails at once",
            self.check_classification().await
        );
        check!(
            "a timed-out attempt is retried (real clock, 300 ms timeout)",
            self.check_timeout()
        );
        check!(
            "Retry-After and the rate limit are honoured (paused time)",
            self.check_waits().await
        );
        check!(
            "a 429's Retry-After holds back every other request of the connection (real clock, 1 s)",
            self.check_pause()
        );
        check!(
            "mark and sweep: only a pull that reached its last page is complete",
            self.check_completeness().await
        );
        check!(
            "data errors never trip the circuit breaker",
            self.check_breaker().await
        );
        check!(
            "truncated bodies are fetched again; malformed bodies are handed over as unparseable, never guessed past",
            self.check_bodies().await
        );
        check!(
            "token expiry mid-run refreshes once; a rotated refresh token is saved",
            self.check_tokens().await
        );
        check!(
            "raw before watermark: every checkpoint's object is stored, content-addressed",
            self.check_raw_first().await
        );
        if self.golden.is_some() {
            check!(
                "golden mapping output with provenance",
                self.check_golden().await
            );
            check!(
                "replay of stored pages equals the live mapping",
                self.check_replay().await
            );
        } else {
            check!("golden mapping output with provenance", off "golden");
            check!("replay of stored pages equals the live mapping", off "golden");
        }
        check!(
            "every request matches its declaration (method, path, query, body); POSTs that only read are idempotent",
            self.check_requests().await
        );
        check!(
            "an incremental pull sends the stored state as its bound",
            if incremental,
            self.check_incremental().await
        );
        check!(
            "tombstones are read as deletions, never mapped",
            if deletes,
            self.check_tombstones().await
        );
        check!(
            "fan-out: each partition has its own key and asks for its own data",
            self.check_partitions()
        );
        check!(
            "a repeated page token or link fails as a loop",
            if body_driven_paging,
            self.check_loop().await
        );
        check!(
            "a next link to another origin is refused before any request",
            if next_links,
            self.check_cross_origin().await
        );
        report
    }

    async fn plain(&self) -> Result<(MockSource, StreamDef, HttpClient), String> {
        self.source(|_| {}).await
    }

    /// A fresh mock source and a client for it (settings changed by `tweak`,
    /// rotated credentials kept in memory).
    async fn source(
        &self,
        tweak: impl FnOnce(&mut HttpSettings),
    ) -> Result<(MockSource, StreamDef, HttpClient), String> {
        self.source_with(tweak, Arc::new(MemoryCredentialStore::default()))
            .await
    }

    async fn source_with(
        &self,
        tweak: impl FnOnce(&mut HttpSettings),
        store: Arc<dyn CredentialStore>,
    ) -> Result<(MockSource, StreamDef, HttpClient), String> {
        let (mock, connector, def) = self.setup().await?;
        let http = self.client(&mock, connector.as_ref(), tweak, store)?;
        Ok((mock, def, http))
    }

    async fn check_full_walk(&self) -> Result<(), String> {
        let (mock, def, http) = self.plain().await?;
        let w = Self::walk(http, &def, def.pagination.first(), None).await;
        ensure!(
            w.unparseable.is_empty() && w.stuck.is_none(),
            "fixture pages were not readable: {:?} {:?}",
            w.unparseable,
            w.stuck
        );
        if let Some(e) = w.error {
            return Err(format!("walk failed: {e}"));
        }
        ensure!(
            w.pages.len() == mock.pages(),
            "fetched {} pages of {}",
            w.pages.len(),
            mock.pages()
        );
        for i in 0..mock.pages() {
            let hits = mock.hits(i).await;
            ensure!(hits == 1, "page {i} was requested {hits} times");
        }
        Ok(())
    }

    async fn check_resume(&self) -> Result<(), String> {
        let (mock, def, http) = self.plain().await?;
        let all = self.records(
            &def,
            &Self::walk(http.clone(), &def, def.pagination.first(), None)
                .await
                .pages,
        )?;
        let cut = (mock.pages() / 2).max(1);
        let first = Self::walk(http.clone(), &def, def.pagination.first(), Some(cut)).await;
        // The checkpoint after page `cut` is what the last stored page said comes next.
        let Some((last_token, last_body)) = first.pages.last() else {
            return Err("no page before the crash".into());
        };
        let url = def
            .page_url(http.base_url(), last_token, None)
            .map_err(|e| e.to_string())?;
        // (The since bound does not change where a page is.)
        let facts = page_facts(
            &def,
            &url,
            http.base_url(),
            std::str::from_utf8(last_body).unwrap_or(""),
            &Default::default(),
        )
        .map_err(|e| e.to_string())?;
        let mut got = self.records(&def, &first.pages)?;
        if let Some(next) = def.pagination.next(last_token, &facts) {
            let rest = Self::walk(http, &def, next, None).await;
            if let Some(e) = rest.error {
                return Err(format!("resumed walk failed: {e}"));
            }
            got.extend(self.records(&def, &rest.pages)?);
        }
        let unique: HashSet<&String> = got.iter().collect();
        ensure!(
            unique.len() == got.len(),
            "{} records fetched twice",
            got.len() - unique.len()
        );
        ensure!(
            got.len() == all.len(),
            "resumed pull has {} records, a whole pull {}",
            got.len(),
            all.len()
        );
        Ok(())
    }

    async fn check_classification(&self) -> Result<(), String> {
        let (mock, def, http) = self.source(|_| {}).await?;
        let last = mock.pages() - 1;
        mock.inject(
            0,
            Fault::ServerErrors {
                status: 503,
                count: 2,
            },
        )
        .await;
        mock.inject(
            last,
            Fault::ServerErrors {
                status: 502,
                count: 1,
            },
        )
        .await;
        let w = Self::walk(http, &def, def.pagination.first(), None).await;
        if let Some(e) = w.error {
            return Err(format!("transient faults were not retried: {e}"));
        }
        // Page 0 failed twice (and once more when it is also the last page).
        let failures = if last == 0 { 3 } else { 2 };
        ensure!(
            mock.hits(0).await == failures + 1,
            "page 0: {} requests for {failures} failures",
            mock.hits(0).await
        );
        let (mock, def, http) = self.source(|_| {}).await?;
        mock.inject(0, Fault::DataError).await;
        let w = Self::walk(http, &def, def.pagination.first(), None).await;
        ensure!(
            matches!(w.error, Some(Error::Client { status: 422, .. })),
            "422 gave {:?}",
            w.error.map(|e| e.to_string())
        );
        ensure!(mock.hits(0).await == 1, "a data error was retried");
        Ok(())
    }

    /// Under paused time the clock jumps to the next timer whenever the
    /// runtime waits on loopback I/O, so an attempt timeout would fire on
    /// every request: this check runs on its own runtime with the real clock.
    fn check_timeout(&self) -> Result<(), String> {
        on_real_clock("timeout", async {
            let (mock, def, http) = self
                .source(|s| {
                    s.attempt_timeout = Some(Duration::from_millis(300));
                    s.retry.base_delay = Duration::from_millis(1);
                })
                .await?;
            mock.inject(0, Fault::Timeout).await;
            let w = Self::walk(http, &def, def.pagination.first(), Some(1)).await;
            ensure!(w.error.is_none(), "{:?}", w.error.map(|e| e.to_string()));
            ensure!(
                mock.hits(0).await == 2,
                "page 0: {} requests",
                mock.hits(0).await
            );
            Ok(())
        })
    }

    async fn check_waits(&self) -> Result<(), String> {
        let (mock, def, http) = self.source(|_| {}).await?;
        mock.inject(
            0,
            Fault::RateLimited {
                retry_after_secs: 7,
            },
        )
        .await;
        let w = Self::walk(http, &def, def.pagination.first(), None).await;
        ensure!(w.error.is_none(), "{:?}", w.error.map(|e| e.to_string()));
        ensure!(
            w.elapsed >= Duration::from_secs(7),
            "Retry-After 7 s, waited {:?}",
            w.elapsed
        );
        let (_mock, def, http) = self
            .source(|s| {
                s.rate_limit.requests_per_sec = Some(2.0);
                s.rate_limit.burst = 1;
            })
            .await?;
        let w = Self::walk(http, &def, def.pagination.first(), None).await;
        ensure!(w.error.is_none(), "{:?}", w.error.map(|e| e.to_string()));
        let floor = Duration::from_millis(500) * (w.pages.len() as u32 - 1);
        ensure!(
            w.elapsed >= floor,
            "{} pages at 2/s took {:?}",
            w.pages.len(),
            w.elapsed
        );
        Ok(())
    }

    /// A second pull on the same connection, started after the source
    /// answered 429 with `Retry-After: 1`, does not reach the source before
    /// that second is over: the wait holds for the connection, not only for
    /// the request that was refused. On the real clock (paused time jumps
    /// while loopback I/O is pending, which would hide the difference).
    fn check_pause(&self) -> Result<(), String> {
        on_real_clock("pause", async {
            let (mock, def, http) = self
                .source(|s| s.retry.base_delay = Duration::from_millis(1))
                .await?;
            mock.inject(
                0,
                Fault::RateLimited {
                    retry_after_secs: 1,
                },
            )
            .await;
            let first = Self::walk(http.clone(), &def, def.pagination.first(), Some(1));
            let second = async {
                while mock.hits(0).await == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                let t0 = Instant::now();
                let w = Self::walk(http.clone(), &def, def.pagination.first(), Some(1)).await;
                (t0.elapsed(), w)
            };
            let (a, (waited, b)) = tokio::join!(first, second);
            for w in [&a, &b] {
                if let Some(e) = &w.error {
                    return Err(format!("a pull failed: {e}"));
                }
            }
            ensure!(
                waited >= Duration::from_millis(800),
                "the second pull got its page after {waited:?}, within the source's Retry-After of 1 s"
            );
            Ok(())
        })
    }

    /// A stream declared per partition: every copy validates, has its own
    /// key (its own watermark, raw objects and lease), and asks for its own
    /// data (requests differ from one partition to the next). A stream
    /// without partitions passes trivially (there is nothing to fan out).
    fn check_partitions(&self) -> Result<(), String> {
        let base = Url::parse("http://127.0.0.1:9/").map_err(|e| e.to_string())?;
        let connector = (self.build)(base.as_str()).map_err(|e| e.to_string())?;
        let copies: Vec<StreamDef> = connector
            .streams()
            .into_iter()
            .filter(|d| d.name == self.stream)
            .collect();
        if copies.len() < 2 {
            return Ok(());
        }
        let mut keys = HashSet::new();
        let mut requests = Vec::new();
        for d in &copies {
            d.validate().map_err(|e| e.to_string())?;
            ensure!(
                d.partition.is_some(),
                "stream {} is declared {} times, but not every copy names its partition",
                d.name,
                copies.len()
            );
            ensure!(
                keys.insert(d.key()),
                "two partitions share the key {}",
                d.key()
            );
            let page = crate::PageCtx {
                partition: d.partition.as_deref(),
                ..Default::default()
            };
            let req = d
                .request(connector.base_url(), &d.pagination.first(), &page)
                .map_err(|e| e.to_string())?;
            ensure!(
                !requests.contains(&req),
                "partition {} asks for the same data as another one: its request does not depend on the partition",
                d.key()
            );
            requests.push(req);
        }
        Ok(())
    }

    /// What mark and sweep relies on: a pull that reached its last page says
    /// so (no next page, nothing stuck), and one whose last page fails never
    /// does (it ends in an error). A pull that is not complete deletes nothing.
    async fn check_completeness(&self) -> Result<(), String> {
        let (mock, def, http) = self.plain().await?;
        let w = Self::walk(http, &def, def.pagination.first(), None).await;
        ensure!(
            w.error.is_none() && w.stuck.is_none() && w.pages.len() == mock.pages(),
            "a whole pull did not end complete: {:?} {:?}",
            w.error.map(|e| e.to_string()),
            w.stuck
        );
        let (mock, def, http) = self.source(|s| s.retry.max_attempts = 2).await?;
        mock.inject(
            mock.pages() - 1,
            Fault::ServerErrors {
                status: 500,
                count: 100,
            },
        )
        .await;
        let w = Self::walk(http, &def, def.pagination.first(), None).await;
        ensure!(
            w.error.is_some(),
            "a pull whose last page fails ended without an error: it would count as complete"
        );
        Ok(())
    }

    async fn check_breaker(&self) -> Result<(), String> {
        let (mock, def, http) = self.source(|s| s.breaker.consecutive_failures = 2).await?;
        mock.inject(0, Fault::DataError).await;
        for _ in 0..5 {
            let _ = Self::walk(http.clone(), &def, def.pagination.first(), None).await;
        }
        let state = http.breaker().state;
        ensure!(
            state == crate::BreakerState::Closed,
            "breaker is {state:?} after data errors"
        );
        ensure!(
            mock.hits(0).await == 5,
            "calls were refused: {}",
            mock.hits(0).await
        );
        Ok(())
    }

    async fn check_bodies(&self) -> Result<(), String> {
        let (mock, def, http) = self.source(|_| {}).await?;
        mock.inject(0, Fault::Truncated).await;
        let w = Self::walk(http, &def, def.pagination.first(), None).await;
        ensure!(
            w.error.is_none(),
            "truncated body: {:?}",
            w.error.map(|e| e.to_string())
        );
        ensure!(
            w.pages[0].1.as_ref() == mock.body(0).as_bytes(),
            "the stored body is not the complete one"
        );
        let (mock, def, http) = self.source(|_| {}).await?;
        mock.inject(0, Fault::Malformed).await;
        let w = Self::walk(http, &def, def.pagination.first(), None).await;
        ensure!(
            w.error.is_none(),
            "a malformed body must be handed over to be stored, not fail the fetch: {:?}",
            w.error.map(|e| e.to_string())
        );
        match w.unparseable.first() {
            Some((t, why)) if *t == def.pagination.first() => {
                ensure!(why.contains("not JSON"), "unclear: {why}")
            }
            other => return Err(format!("malformed first page handed over as {other:?}")),
        }
        ensure!(
            w.stuck.is_some() || w.pages.len() > 1,
            "a malformed page without a known total must say the pull cannot go on"
        );
        ensure!(mock.hits(0).await == 1, "a malformed body was retried");
        Ok(())
    }

    async fn check_tokens(&self) -> Result<(), String> {
        let store = Arc::new(MemoryCredentialStore::default());
        let (mock, def, http) = self.source_with(|_| {}, store.clone()).await?;
        mock.inject(mock.pages() - 1, Fault::TokenExpired).await;
        let w = Self::walk(http, &def, def.pagination.first(), None).await;
        ensure!(w.error.is_none(), "{:?}", w.error.map(|e| e.to_string()));
        let grants = mock.token_grants().await;
        ensure!(
            grants == 2,
            "expected the first grant and one refresh, saw {grants}"
        );
        let key = crate::auth::refresh_token_key("conformance", &"rt-0".to_owned().into());
        let saved = store.load(&key).await.map_err(|e| e.to_string())?;
        let saved = saved.map(|s| secrecy::ExposeSecret::expose_secret(&s).to_owned());
        ensure!(
            saved.as_deref() == Some("rt-2"),
            "the store holds {saved:?}, not the last rotated token"
        );
        Ok(())
    }

    async fn check_raw_first(&self) -> Result<(), String> {
        let (mock, def, http) = self.plain().await?;
        let store = RawStore::in_memory();
        let mut pager = Pager::new(http, def.clone(), def.pagination.first(), None, 2);
        let mut keys = Vec::new();
        while let Some(p) = pager.next_page().await {
            let p = p.map_err(|e| e.to_string())?;
            // The reference order: put, then checkpoint.
            let obj = store
                .put(
                    "t",
                    "conformance",
                    def.name,
                    chrono::Utc::now(),
                    None,
                    p.response.body.clone(),
                )
                .await
                .map_err(|e| e.to_string())?;
            ensure!(
                store.exists(&obj.key).await.map_err(|e| e.to_string())?,
                "checkpoint before the object exists"
            );
            // Verbatim: what is stored is byte for byte what the source sent.
            let stored = store.get(&obj.key).await.map_err(|e| e.to_string())?;
            ensure!(
                stored.as_ref() == mock.body(keys.len()).as_bytes(),
                "page {} was not stored verbatim",
                keys.len()
            );
            let again = store
                .put(
                    "t",
                    "conformance",
                    def.name,
                    chrono::Utc::now(),
                    None,
                    p.response.body.clone(),
                )
                .await
                .map_err(|e| e.to_string())?;
            ensure!(again.key == obj.key, "a re-fetched page was stored twice");
            keys.push(obj.key);
        }
        ensure!(!keys.is_empty(), "nothing stored");
        Ok(())
    }

    /// The mapping of every record, in order: one line per record; a
    /// tombstone is a line of its own and is never mapped.
    fn mapped(
        &self,
        def: &StreamDef,
        pages: &[(PageToken, bytes::Bytes)],
    ) -> Result<Vec<String>, String> {
        let golden = self.golden.as_ref().ok_or("no golden mapping")?;
        let deleted = def.deleted;
        let mut out = Vec::new();
        for (t, body) in pages {
            let split =
                crate::records::split_page(body, &def.records.stored(), def.pagination.total_at())
                    .map_err(|e| format!("{t}: {e}"))?;
            for r in split.records {
                let v: Value = serde_json::from_str(r.get()).map_err(|e| e.to_string())?;
                if deleted
                    .as_ref()
                    .is_some_and(|d| crate::records::is_tombstone(r, d))
                {
                    let id = crate::records::key_at(r, def.primary_key)
                        .ok()
                        .flatten()
                        .map_or(Value::Null, Value::String);
                    out.push(format!("tombstone {id}"));
                    continue;
                }
                out.push((golden.map)(&v)?);
            }
        }
        Ok(out)
    }

    fn records(
        &self,
        def: &StreamDef,
        pages: &[(PageToken, bytes::Bytes)],
    ) -> Result<Vec<String>, String> {
        let mut out = Vec::new();
        for (_, body) in pages {
            let split = crate::records::split_page(body, &def.records.stored(), None)
                .map_err(|e| e.to_string())?;
            for r in split.records {
                let pk = crate::records::key_at(r, def.primary_key)?
                    .ok_or_else(|| format!("a record has no primary key at {}", def.primary_key))?;
                out.push(pk);
            }
        }
        Ok(out)
    }

    async fn check_golden(&self) -> Result<(), String> {
        let golden = self.golden.as_ref().ok_or("no golden mapping")?;
        let (_mock, def, http) = self.plain().await?;
        let w = Self::walk(http, &def, def.pagination.first(), None).await;
        let mapped = self.mapped(&def, &w.pages)?;
        let text = serde_json::to_string_pretty(&serde_json::json!({
            "mapping": golden.mapping,
            "records": mapped,
        }))
        .map_err(|e| e.to_string())?;
        let path = &golden.path;
        if std::env::var_os("BLESS").is_some() {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
            }
            std::fs::write(path, text + "\n").map_err(|e| e.to_string())?;
            return Ok(());
        }
        let want = std::fs::read_to_string(path).map_err(|e| {
            format!(
                "golden file {}: {e} (run with BLESS=1 to write it)",
                path.display()
            )
        })?;
        ensure!(
            want.trim_end() == text.trim_end(),
            "mapping output differs from {} (BLESS=1 rewrites it after review)",
            path.display()
        );
        Ok(())
    }

    /// Every page was asked for exactly as declared: the mock only answers a
    /// request whose method, path, query and body match, so a walk that
    /// completes proves it; a POST stream must be declared idempotent (a
    /// read), or it would not be retried.
    async fn check_requests(&self) -> Result<(), String> {
        let (mock, def, http) = self.plain().await?;
        let w = Self::walk(http, &def, def.pagination.first(), None).await;
        if let Some(e) = w.error {
            return Err(format!("a request did not match its declaration: {e}"));
        }
        for p in &mock.pages {
            ensure!(
                p.req.idempotent,
                "{} {} is not idempotent: a stream only reads, declare it so",
                p.req.method.as_str(),
                p.req.url.path()
            );
        }
        let received = mock.server.received_requests().await.unwrap_or_default();
        for r in received.iter().filter(|r| r.url.path() != TOKEN_PATH) {
            let ct = r.headers.get("content-type").and_then(|v| v.to_str().ok());
            if !r.body.is_empty() {
                ensure!(
                    ct.is_some_and(
                        |c| c == "application/json" || c == "application/x-www-form-urlencoded"
                    ),
                    "a body was sent with content type {ct:?}"
                );
            }
        }
        Ok(())
    }

    /// With a stored state, the first request carries it (query or body) and
    /// differs from the first pull's; the walk then reads the same pages.
    async fn check_incremental(&self) -> Result<(), String> {
        let (mock, def, http) = self.plain().await?;
        ensure!(
            matches!(def.mode, crate::SyncMode::Incremental { .. }),
            "the stream is not incremental"
        );
        // The state in its stream's shape: a keyset pair, or a time (or token) string.
        // A keyset id has the shape of the stream's key (one part per pointer).
        let parts = def.primary_key.split(',').count();
        let state_at = |t: &str| match def.mode {
            crate::SyncMode::Incremental { keyset: true, .. } => {
                serde_json::json!({"modified": t, "id": crate::records::join_key(&vec!["17"; parts])})
            }
            _ => Value::String(t.into()),
        };
        let state = state_at("2024-01-02T03:04:05+01:00");
        let base = http.base_url().clone();
        let partition = def.partition.as_deref();
        let at = |since: Option<&Value>| {
            def.request(
                &base,
                &def.pagination.first(),
                &crate::PageCtx {
                    since,
                    partition,
                    ..Default::default()
                },
            )
            .map_err(|e| e.to_string())
        };
        let first = at(None)?;
        let bounded = at(Some(&state))?;
        ensure!(
            first != bounded,
            "the request with a stored state is the first pull's: the bound is not sent"
        );
        // A keyset state held at the server's clock has no id.
        if let crate::SyncMode::Incremental { keyset: true, .. } = def.mode {
            let capped = serde_json::json!({"modified": "2024-01-02T03:04:05Z", "id": null});
            let req =
                at(Some(&capped)).map_err(|e| format!("a keyset state without an id: {e}"))?;
            ensure!(
                req != first,
                "a keyset state without an id (`modified >= m`) is not sent"
            );
        }
        let sent = format!(
            "{}{}",
            bounded.url.query().unwrap_or(""),
            bounded
                .body
                .as_ref()
                .map(|b| String::from_utf8_lossy(&b.encode().0).into_owned())
                .unwrap_or_default()
        );
        let encoded: String =
            url::form_urlencoded::byte_serialize(b"2024-01-02T03:04:05+01:00").collect();
        // Sent as stored, or in the source's own form (another zone, a
        // lookback): then another state makes another request.
        let later = at(Some(&state_at("2024-06-01T00:00:00Z")))?;
        ensure!(
            sent.contains("2024-01-02T03:04:05+01:00")
                || sent.contains(&encoded)
                || later != bounded,
            "the stored state does not appear in the request: {sent}"
        );
        // The source answers the bounded request like the first one.
        for (i, p) in mock.pages.iter().enumerate() {
            let mut at = p.req.clone();
            if i == 0 {
                at = bounded.clone();
            }
            Mock::given(method(at.method.as_str()))
                .and(path_is(at.url.path()))
                .and(ExactQuery(at.url.query_pairs().into_owned().collect()))
                .and(ExactBody(at.body.as_ref().map(|b| b.encode().0)))
                .respond_with(ResponseTemplate::new(200).set_body_string(p.body.clone()))
                .with_priority(5)
                .mount(&mock.server)
                .await;
        }
        let mut pager = Pager::new(http, def.clone(), def.pagination.first(), Some(state), 1);
        match pager.next_page().await {
            Some(Ok(_)) => Ok(()),
            Some(Err(e)) => Err(format!("the bounded request was not the one declared: {e}")),
            None => Err("no page".into()),
        }
    }

    /// The fixtures hold a tombstone, it is read as one (with its id), and
    /// it is not mapped as a record.
    async fn check_tombstones(&self) -> Result<(), String> {
        let (_mock, def, http) = self.plain().await?;
        let rule = def
            .deleted
            .ok_or("the stream declares no way a record is deleted")?;
        let w = Self::walk(http, &def, def.pagination.first(), None).await;
        let mut tombstones = 0;
        for (_, body) in &w.pages {
            let split = crate::records::split_page(body, &def.records.stored(), None)
                .map_err(|e| e.to_string())?;
            for r in split.records {
                if crate::records::is_tombstone(r, &rule) {
                    tombstones += 1;
                    ensure!(
                        matches!(crate::records::key_at(r, def.primary_key), Ok(Some(_))),
                        "a tombstone without an id at {}",
                        def.primary_key
                    );
                }
            }
        }
        ensure!(
            tombstones > 0,
            "the fixture pages hold no tombstone: record one"
        );
        Ok(())
    }

    async fn check_replay(&self) -> Result<(), String> {
        let (_mock, def, http) = self.plain().await?;
        let w = Self::walk(http, &def, def.pagination.first(), None).await;
        let store = RawStore::in_memory();
        let mut stored = Vec::new();
        for (t, body) in &w.pages {
            let obj = store
                .put("t", "c", def.name, chrono::Utc::now(), None, body.clone())
                .await
                .map_err(|e| e.to_string())?;
            stored.push((
                t.clone(),
                store.get(&obj.key).await.map_err(|e| e.to_string())?,
            ));
        }
        ensure!(
            self.mapped(&def, &w.pages)? == self.mapped(&def, &stored)?,
            "replayed mapping differs from live"
        );
        Ok(())
    }

    async fn check_loop(&self) -> Result<(), String> {
        let (mock, def, http) = self.plain().await?;
        ensure!(
            mock.pages() >= 2,
            "the loop check needs at least two fixture pages"
        );
        // Page 1 names itself as its next page: what page 0 named.
        let next0 = raw_next(&def, mock.body(0))?.ok_or("page 0 names no next page")?;
        let body1 = mock.body(1).to_owned();
        let looped = match raw_next(&def, &body1)? {
            Some(n1) => body1.replace(&format!("{n1:?}"), &format!("{next0:?}")),
            None => {
                return Err(
                    "page 1 names no next page; the loop check needs three fixture pages".into(),
                );
            }
        };
        mock.replace_body(1, looped).await;
        let w = Self::walk(http, &def, def.pagination.first(), None).await;
        ensure!(
            matches!(w.error, Some(Error::PaginationLoop { .. })),
            "got {:?}",
            w.error.map(|e| e.to_string())
        );
        Ok(())
    }

    async fn check_cross_origin(&self) -> Result<(), String> {
        let (mock, def, http) = self.plain().await?;
        let evil = MockServer::start().await;
        let body0 = mock.body(0).to_owned();
        let next0 = raw_next(&def, &body0)?.ok_or("page 0 names no next page")?;
        let abs = mock.pages[0]
            .req
            .url
            .join(&next0)
            .map_err(|e| e.to_string())?;
        let off_origin = format!("{}{}?{}", evil.uri(), abs.path(), abs.query().unwrap_or(""));
        mock.replace_body(
            0,
            body0.replace(&format!("{next0:?}"), &format!("{off_origin:?}")),
        )
        .await;
        let w = Self::walk(http, &def, def.pagination.first(), None).await;
        ensure!(
            matches!(w.error, Some(Error::CrossOrigin { .. })),
            "got {:?}",
            w.error.map(|e| e.to_string())
        );
        let sent = evil.received_requests().await.unwrap_or_default().len();
        ensure!(sent == 0, "{sent} requests reached the other origin");
        Ok(())
    }
}

/// Runs `check` on a runtime of its own with the real clock, on its own
/// thread (the suite itself runs under paused time, whose clock jumps while
/// loopback I/O is pending and would hide what a check measures).
fn on_real_clock(
    name: &str,
    check: impl std::future::Future<Output = Result<(), String>> + Send,
) -> Result<(), String> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())?
                    .block_on(check)
            })
            .join()
            .unwrap_or_else(|_| Err(format!("the {name} check panicked")))
    })
}

/// The next-page value exactly as the body has it (a cursor, or a link before
/// resolution).
fn raw_next(def: &StreamDef, body: &str) -> Result<Option<String>, String> {
    crate::fetch::raw_next(def, body)
}
