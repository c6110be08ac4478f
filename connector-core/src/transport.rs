//! The one timed send-and-read that every HTTP exchange goes through (page
//! fetches and token requests), and the bounds on what a source controls.
//!
//! A body is read chunk by chunk and refused as soon as it passes its limit
//! (a `Content-Length` above the limit is refused before any byte is read), so
//! a source can never make the daemon buffer more than the limit. Error bodies
//! (non-2xx) are only read up to [`ERROR_BODY_LIMIT`] and cut there: they
//! only feed a short snippet.

use bytes::{Bytes, BytesMut};
use reqwest::header::HeaderMap;
use std::time::Duration;
use tokio::time::Instant;

use crate::Error;

/// Default limit of one page body: 64 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 << 20;
/// What is read of an error response's body.
pub const ERROR_BODY_LIMIT: usize = 64 << 10;
/// The longest wait a source can ask for (`Retry-After`, reset headers): a
/// week. Longer values are clamped; any wait beyond the run's limits defers it.
pub const MAX_SOURCE_WAIT: Duration = Duration::from_secs(7 * 24 * 3600);
/// The longest lifetime a token response can claim (`expires_in`): a day.
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// `now + d`, saturating at a far-future instant instead of overflowing.
pub fn instant_after(now: Instant, d: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    now.checked_add(d.min(FAR))
        .or_else(|| now.checked_add(Duration::from_secs(365 * 24 * 3600)))
        .unwrap_or(now)
}

/// An exchange's answer: status, headers and the body read within its limit.
#[derive(Debug)]
pub(crate) struct Exchange {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Maps a reqwest error of one attempt: a timeout (retried only when the
/// request is idempotent), a body cut short, or a transport failure.
pub(crate) fn transport_error(
    endpoint: &str,
    e: reqwest::Error,
    timeout: Option<Duration>,
    idempotent: bool,
) -> Error {
    let endpoint = endpoint.to_owned();
    if e.is_timeout() {
        Error::Timeout {
            endpoint,
            after: timeout.unwrap_or_default(),
            idempotent,
        }
    } else if e.is_body() || e.is_decode() {
        Error::Truncated {
            endpoint,
            message: describe(&e),
        }
    } else {
        Error::Transport {
            endpoint,
            message: describe(&e),
        }
    }
}

/// Describes a reqwest error without its URL (which could carry a query secret).
pub(crate) fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "response body interrupted"
    } else if e.is_redirect() {
        "redirect refused"
    } else {
        "request failed"
    };
    let mut source = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}: {detail}")
    }
}

/// Sends `req` and reads the answer within `timeout` (the whole exchange,
/// body included). A 2xx body larger than `max_body` is refused with
/// [`Error::BodyTooLarge`]; other bodies are cut at [`ERROR_BODY_LIMIT`].
pub(crate) async fn exchange(
    req: reqwest::RequestBuilder,
    endpoint: &str,
    timeout: Option<Duration>,
    idempotent: bool,
    max_body: usize,
) -> Result<Exchange, Error> {
    let transport = |e| transport_error(endpoint, e, timeout, idempotent);
    let run = async {
        let mut resp = req.send().await.map_err(transport)?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let ok = (200..300).contains(&status);
        let limit = if ok { max_body } else { ERROR_BODY_LIMIT };
        let too_large = || Error::BodyTooLarge {
            endpoint: endpoint.to_owned(),
            limit,
        };
        if ok && resp.content_length().is_some_and(|n| n > limit as u64) {
            return Err(too_large());
        }
        let mut body = BytesMut::new();
        while let Some(chunk) = resp.chunk().await.map_err(transport)? {
            if body.len() + chunk.len() > limit {
                if ok {
                    return Err(too_large());
                }
                body.extend_from_slice(&chunk[..limit - body.len()]);
                break;
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Exchange {
            status,
            headers,
            body: body.freeze(),
        })
    };
    match timeout {
        Some(t) => tokio::time::timeout(t, run)
            .await
            .map_err(|_| Error::Timeout {
                endpoint: endpoint.to_owned(),
                after: t,
                idempotent,
            })?,
        None => run.await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_saturate_instead_of_overflowing() {
        let now = Instant::now();
        assert!(instant_after(now, Duration::MAX) > now);
        assert_eq!(
            instant_after(now, Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
    }
}
