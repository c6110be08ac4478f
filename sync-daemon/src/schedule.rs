//! When `run` syncs each stream: the schedule config (`schedule = "cron"` or
//! `every = "15m"`, with jitter), the `[daemon]` settings, and the pure
//! decisions of the scheduler (the next due time after each outcome, the
//! backoff of a failing stream). The loop that acts on them is
//! [`crate::scheduler`].

use chrono::{DateTime, Utc};
use std::num::NonZeroUsize;
use std::time::Duration;

/// How often a stream is due.
#[derive(Clone, Debug)]
pub enum When {
    /// A cron expression: 5 fields (minute granularity) or 6 with seconds
    /// first; POSIX weekdays (0 or 7 is Sunday).
    Cron {
        cron: Box<croner::Cron>,
        text: String,
    },
    /// A fixed interval from the end of the last run.
    Every(Duration),
}

/// One stream's schedule.
#[derive(Clone, Debug)]
pub struct Schedule {
    pub when: When,
    /// Each due time is moved later by a random share of this, so replicas
    /// and connections do not all start on the same second.
    pub jitter: Duration,
    /// The zone a cron expression is read in (default UTC).
    pub time_zone: chrono_tz::Tz,
}

/// The keys of a schedule, in a `[[connection]]` or a `[connection.streams.NAME]`.
pub const SCHEDULE_KEYS: &[&str] = &["schedule", "every", "jitter", "schedule_time_zone"];

/// The largest jitter applied by default: 10 % of the period, at most this.
const DEFAULT_JITTER_MAX: Duration = Duration::from_secs(60);

impl Schedule {
    /// Reads a schedule from the keys of `t` (removing them); `None` when
    /// `t` has neither `schedule` nor `every`.
    pub fn take_from(t: &mut toml::Table) -> Result<Option<Self>, String> {
        let text = |t: &mut toml::Table, k: &str| -> Result<Option<String>, String> {
            match t.remove(k) {
                None => Ok(None),
                Some(toml::Value::String(s)) => Ok(Some(s)),
                Some(v) => Err(format!("{k} must be a string, not {}", v.type_str())),
            }
        };
        let cron = text(t, "schedule")?;
        let every = text(t, "every")?;
        let jitter = text(t, "jitter")?;
        let zone = text(t, "schedule_time_zone")?;
        let when = match (cron, every) {
            (Some(_), Some(_)) => {
                return Err("give either schedule (cron) or every (an interval), not both".into());
            }
            (None, None) => {
                if jitter.is_some() || zone.is_some() {
                    return Err(
                        "jitter and schedule_time_zone need a schedule (cron) or every (an interval)"
                            .into(),
                    );
                }
                return Ok(None);
            }
            (Some(c), None) => When::Cron {
                cron: Box::new(parse_cron(&c)?),
                text: c.trim().to_owned(),
            },
            (None, Some(e)) => {
                let d = connector_core::parse_duration(&e).map_err(|m| format!("every: {m}"))?;
                if d < Duration::from_secs(1) {
                    return Err(format!("every: {e:?} is too short (at least 1s)"));
                }
                When::Every(d)
            }
        };
        let time_zone = match zone {
            None => chrono_tz::UTC,
            Some(z) => z.parse().map_err(|_| {
                format!(
                    "schedule_time_zone: {z:?} is not an IANA time zone (e.g. \"Europe/Berlin\")"
                )
            })?,
        };
        let mut s = Schedule {
            when,
            jitter: Duration::ZERO,
            time_zone,
        };
        s.jitter = match jitter {
            Some(j) => connector_core::parse_duration(&j).map_err(|m| format!("jitter: {m}"))?,
            None => (s.period() / 10).min(DEFAULT_JITTER_MAX),
        };
        if s.jitter > s.period() {
            return Err(format!(
                "jitter ({}s) is longer than the period ({}s)",
                s.jitter.as_secs(),
                s.period().as_secs()
            ));
        }
        Ok(Some(s))
    }

    /// The schedule as text, e.g. `every 15m` or `cron 0 2 * * * (Europe/Berlin)`;
    /// stored with the due time, so a changed schedule is noticed.
    pub fn spec(&self) -> String {
        match &self.when {
            When::Every(d) => format!("every {}s", d.as_secs()),
            When::Cron { text, .. } => format!("cron {text} ({})", self.time_zone),
        }
    }

    /// The regular period: the interval, or the gap between two cron times
    /// from now (for the default jitter).
    fn period(&self) -> Duration {
        match &self.when {
            When::Every(d) => *d,
            When::Cron { .. } => {
                let now = Utc::now();
                match self
                    .next_after(now)
                    .and_then(|a| Some((a, self.next_after(a)?)))
                {
                    Some((a, b)) => (b - a).to_std().unwrap_or(Duration::ZERO),
                    None => Duration::ZERO,
                }
            }
        }
    }

    /// The next regular time strictly after `t` (`None`: the cron
    /// expression has no more times, e.g. a past year).
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match &self.when {
            When::Every(d) => t.checked_add_signed(chrono::Duration::from_std(*d).ok()?),
            When::Cron { cron, .. } => cron
                .find_next_occurrence(&t.with_timezone(&self.time_zone), false)
                .ok()
                .map(|n| n.with_timezone(&Utc)),
        }
    }

    /// When a stream never run before is first due: at once for an
    /// interval, at the next cron time for a cron schedule.
    pub fn first_due(&self, now: DateTime<Utc>, rng: &mut fastrand::Rng) -> DateTime<Utc> {
        match &self.when {
            When::Every(_) => now + jitter(self.jitter, rng),
            When::Cron { .. } => self.due_after(now, rng),
        }
    }

    /// The next regular time after `now`, jittered (far in the future when
    /// the expression has no more times).
    pub fn due_after(&self, now: DateTime<Utc>, rng: &mut fastrand::Rng) -> DateTime<Utc> {
        match self.next_after(now) {
            Some(t) => t + jitter(self.jitter, rng),
            None => DateTime::<Utc>::MAX_UTC,
        }
    }
}

/// A random duration within `0..=max`.
fn jitter(max: Duration, rng: &mut fastrand::Rng) -> chrono::Duration {
    let ms = u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
    chrono::Duration::milliseconds(i64::try_from(rng.u64(0..=ms)).unwrap_or(0))
}

/// Parses a cron expression, seconds optional.
pub fn parse_cron(text: &str) -> Result<croner::Cron, String> {
    let fields = text.split_whitespace().count();
    if !(5..=6).contains(&fields) {
        return Err(format!(
            "schedule: {text:?} is not a cron expression: give 5 fields (minute hour day-of-month month day-of-week) or 6 with seconds first, e.g. \"*/15 * * * *\""
        ));
    }
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Optional)
        .year(croner::parser::Year::Disallowed)
        .build()
        .parse(text)
        .map_err(|e| format!("schedule: {text:?} is not a cron expression: {e}"))
}

/// `[daemon]`: how `run` behaves.
#[derive(Clone, Debug)]
pub struct DaemonConfig {
    /// Where `/metrics` and `/healthz` are served (none when unset).
    pub listen: Option<std::net::SocketAddr>,
    /// Runs at once in this process.
    pub max_concurrent_runs: NonZeroUsize,
    /// After SIGTERM or SIGINT, how long running runs may take to reach
    /// their next checkpoint before they are stopped where they are.
    pub shutdown_grace: Duration,
    /// The first wait after a failed run; it doubles with each failure in a row…
    pub backoff_base: Duration,
    /// …up to this.
    pub backoff_max: Duration,
    /// How often the scheduler looks for due streams.
    pub poll: Duration,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        Self {
            listen: None,
            max_concurrent_runs: NonZeroUsize::new(4).unwrap_or(NonZeroUsize::MIN),
            shutdown_grace: Duration::from_secs(30),
            backoff_base: Duration::from_secs(60),
            backoff_max: Duration::from_secs(3600),
            poll: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDaemon {
    listen: Option<String>,
    max_concurrent_runs: Option<usize>,
    shutdown_grace: Option<String>,
    backoff_base: Option<String>,
    backoff_max: Option<String>,
    poll: Option<String>,
}

impl DaemonConfig {
    /// Reads `[daemon]`; every key is optional.
    pub fn from_toml(v: Option<toml::Value>) -> Result<Self, String> {
        let mut c = Self::default();
        let Some(v) = v else { return Ok(c) };
        let r: RawDaemon = v
            .try_into()
            .map_err(|e: toml::de::Error| format!("daemon: {}", e.message()))?;
        if let Some(l) = r.listen {
            c.listen = Some(l.parse().map_err(|_| {
                format!("daemon.listen: {l:?} is not an address and port, e.g. \"127.0.0.1:9464\"")
            })?);
        }
        if let Some(n) = r.max_concurrent_runs {
            c.max_concurrent_runs = NonZeroUsize::new(n)
                .filter(|n| n.get() <= 256)
                .ok_or("daemon.max_concurrent_runs must be within 1..256")?;
        }
        let dur = |k: &str, v: Option<String>, d: Duration| -> Result<Duration, String> {
            v.map_or(Ok(d), |v| {
                connector_core::parse_duration(&v).map_err(|m| format!("daemon.{k}: {m}"))
            })
        };
        c.shutdown_grace = dur("shutdown_grace", r.shutdown_grace, c.shutdown_grace)?;
        c.backoff_base = dur("backoff_base", r.backoff_base, c.backoff_base)?;
        c.backoff_max = dur("backoff_max", r.backoff_max, c.backoff_max)?;
        c.poll = dur("poll", r.poll, c.poll)?;
        if c.backoff_base.is_zero() || c.backoff_max < c.backoff_base {
            return Err("daemon: backoff_base must be positive and at most backoff_max".into());
        }
        if c.poll.is_zero() || c.poll > Duration::from_secs(60) {
            return Err("daemon.poll must be within 1s..60s".into());
        }
        Ok(c)
    }

    /// The wait after the `failures`-th failed run in a row: the base,
    /// doubled per failure, capped.
    pub fn backoff(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(32);
        self.backoff_base
            .checked_mul(1u32 << doublings.min(31))
            .unwrap_or(self.backoff_max)
            .min(self.backoff_max)
    }
}

/// How a scheduled run ended, as the scheduler sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    /// The source asked for a wait beyond the run's budget: resume then.
    Deferred(DateTime<Utc>),
    /// Failed (or needs re-authentication): back off.
    Failed,
    /// Stopped for a shutdown: due again at once, for any replica.
    Interrupted,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Deferred(_) => "deferred",
            Outcome::Failed => "failed",
            Outcome::Interrupted => "interrupted",
        }
    }
}

/// The next due time and failure count after a run of a stream that had
/// `failures` failures in a row before it.
pub fn after_run(
    schedule: &Schedule,
    daemon: &DaemonConfig,
    outcome: Outcome,
    failures: u32,
    now: DateTime<Utc>,
    rng: &mut fastrand::Rng,
) -> (DateTime<Utc>, u32) {
    match outcome {
        Outcome::Succeeded => (schedule.due_after(now, rng), 0),
        Outcome::Deferred(at) => (at.max(now), failures),
        Outcome::Interrupted => (now, failures),
        Outcome::Failed => {
            let n = failures.saturating_add(1);
            let wait =
                chrono::Duration::from_std(daemon.backoff(n)).unwrap_or(chrono::Duration::hours(1));
            (
                now + wait + jitter(schedule.jitter.min(daemon.backoff(n)), rng),
                n,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn table(s: &str) -> toml::Table {
        toml::from_str(s).unwrap()
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn cron_with_or_without_seconds_and_posix_weekdays() {
        let s = Schedule::take_from(&mut table(r#"schedule = "*/15 * * * *""#))
            .unwrap()
            .unwrap();
        assert_eq!(
            s.next_after(at("2026-11-24T10:07:30Z")),
            Some(at("2026-11-24T10:15:00Z"))
        );
        let s = Schedule::take_from(&mut table(r#"schedule = "30 */5 * * * *""#))
            .unwrap()
            .unwrap();
        assert_eq!(
            s.next_after(at("2026-11-24T10:07:30Z")),
            Some(at("2026-11-24T10:10:30Z"))
        );
        // 1-5 is Monday to Friday (POSIX), not Sunday to Thursday.
        let s = Schedule::take_from(&mut table(r#"schedule = "0 9 * * 1-5""#))
            .unwrap()
            .unwrap();
        // 2026-11-28 is a Saturday: the next is Monday the 30th.
        assert_eq!(
            s.next_after(at("2026-11-27T10:00:00Z")),
            Some(at("2026-11-30T09:00:00Z"))
        );
    }

    #[test]
    fn cron_in_a_time_zone() {
        let s = Schedule::take_from(&mut table(
            "schedule = \"0 2 * * *\"\nschedule_time_zone = \"Europe/Berlin\"",
        ))
        .unwrap()
        .unwrap();
        assert_eq!(
            s.next_after(at("2026-11-24T00:00:00Z")),
            Some(at("2026-11-24T01:00:00Z"))
        );
    }

    #[test]
    fn bad_schedules_are_named() {
        for (text, wants) in [
            (r#"schedule = "*/15 * * *""#, "5 fields"),
            (r#"schedule = "61 * * * *""#, "not a cron expression"),
            (r#"every = "15 minutes""#, "every:"),
            (r#"every = "0""#, "too short"),
            ("schedule = \"* * * * *\"\nevery = \"1m\"", "not both"),
            (r#"jitter = "1m""#, "need a schedule"),
            ("every = \"1m\"\njitter = \"2m\"", "longer than the period"),
            (
                "every = \"1m\"\nschedule_time_zone = \"Mars/Olympus\"",
                "IANA",
            ),
            ("every = 15", "must be a string"),
        ] {
            let e = Schedule::take_from(&mut table(text)).unwrap_err();
            assert!(e.contains(wants), "{text}: {e}");
        }
        assert!(Schedule::take_from(&mut table("x = 1")).unwrap().is_none());
    }

    #[test]
    fn jitter_defaults_to_a_tenth_of_the_period_at_most_a_minute() {
        let s = Schedule::take_from(&mut table(r#"every = "30s""#))
            .unwrap()
            .unwrap();
        assert_eq!(s.jitter, Duration::from_secs(3));
        let s = Schedule::take_from(&mut table(r#"every = "1h""#))
            .unwrap()
            .unwrap();
        assert_eq!(s.jitter, DEFAULT_JITTER_MAX);
        let mut rng = fastrand::Rng::with_seed(7);
        let now = at("2026-11-24T10:00:00Z");
        for _ in 0..100 {
            let d = s.due_after(now, &mut rng);
            assert!(d >= at("2026-11-24T11:00:00Z") && d <= at("2026-11-24T11:01:00Z"));
        }
    }

    #[test]
    fn a_failing_stream_backs_off_exponentially_up_to_the_cap_and_a_success_resets_it() {
        let d = DaemonConfig::default();
        let s = Schedule::take_from(&mut table("every = \"5m\"\njitter = \"0\""))
            .unwrap()
            .unwrap();
        let mut rng = fastrand::Rng::with_seed(1);
        let now = Utc.with_ymd_and_hms(2026, 11, 24, 10, 0, 0).unwrap();
        let mut failures = 0;
        let mut waits = Vec::new();
        for _ in 0..9 {
            let (next, f) = after_run(&s, &d, Outcome::Failed, failures, now, &mut rng);
            failures = f;
            waits.push((next - now).num_seconds());
        }
        assert_eq!(waits, [60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]);
        assert_eq!(d.backoff(u32::MAX), d.backoff_max);
        let (next, f) = after_run(&s, &d, Outcome::Succeeded, failures, now, &mut rng);
        assert_eq!((next - now).num_seconds(), 300);
        assert_eq!(f, 0);
        let resume = now + chrono::Duration::minutes(42);
        let (next, f) = after_run(&s, &d, Outcome::Deferred(resume), 3, now, &mut rng);
        assert_eq!((next, f), (resume, 3));
        let (next, _) = after_run(&s, &d, Outcome::Interrupted, 0, now, &mut rng);
        assert_eq!(next, now);
    }

    #[test]
    fn daemon_keys_are_checked() {
        let v = |s: &str| Some(toml::Value::Table(table(s)));
        let c = DaemonConfig::from_toml(v(
            "listen = \"127.0.0.1:9464\"\nmax_concurrent_runs = 2\nshutdown_grace = \"10s\"",
        ))
        .unwrap();
        assert_eq!(c.listen.unwrap().port(), 9464);
        assert_eq!(c.max_concurrent_runs.get(), 2);
        assert_eq!(c.shutdown_grace, Duration::from_secs(10));
        for (bad, wants) in [
            ("listen = \"localhost\"", "daemon.listen"),
            ("max_concurrent_runs = 0", "max_concurrent_runs"),
            ("backoff_base = \"2h\"", "backoff_base"),
            ("nope = 1", "unknown field"),
        ] {
            let e = DaemonConfig::from_toml(v(bad)).unwrap_err();
            assert!(e.contains(wants), "{bad}: {e}");
        }
    }
}
