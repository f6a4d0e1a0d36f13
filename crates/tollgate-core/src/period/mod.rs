//! Budget periods: calendar periods (daily, weekly, monthly) that reset at a
//! configured local time in an IANA time zone, lifetime, and rolling windows.
//!
//! Periods are *keys*, not jobs: the period a moment belongs to is computed
//! from the moment itself, so nothing has to run at midnight and two racing
//! "resets" cannot erase the new period's spend (LiteLLM #5651, #8364, #36940).
//!
//! Local reset times that a DST change skips or repeats resolve the way
//! most calendars do ("compatible"): a skipped 02:30 becomes 03:30, a
//! repeated 01:30 is the first one.

use std::fmt;
use std::str::FromStr;

use jiff::civil::{Date, DateTime, Time, Weekday};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

/// How often a budget's allowance renews.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PeriodKind {
    Daily,
    Weekly,
    Monthly,
    Lifetime,
    /// The last `window` of spend, continuously.
    Rolling(SignedDuration),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeriodError {
    #[error(
        "unknown period {0:?} (expected daily, weekly, monthly, lifetime or rolling:DURATION like rolling:1h)"
    )]
    Unknown(String),
    #[error("invalid rolling window {0:?} (expected a positive duration like 30m, 1h, 24h, 7d)")]
    BadWindow(String),
    #[error("unknown time zone {0:?}")]
    BadZone(String),
    #[error("invalid reset time {0:?} (expected HH:MM)")]
    BadTime(String),
    #[error("invalid reset weekday {0:?} (expected monday..sunday)")]
    BadWeekday(String),
    #[error(
        "invalid reset day of month {0} (expected 1..=31; past the month's end means its last day)"
    )]
    BadDay(i64),
}

/// Parses `30m`, `1h`, `24h`, `7d`, `90s`.
pub fn parse_span(s: &str) -> Option<SignedDuration> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.len().checked_sub(1)?);
    let n: i64 = num.parse().ok().filter(|n| *n > 0)?;
    let secs = match unit {
        "s" => n,
        "m" => n.checked_mul(60)?,
        "h" => n.checked_mul(3_600)?,
        "d" => n.checked_mul(86_400)?,
        _ => return None,
    };
    Some(SignedDuration::from_secs(secs))
}

/// `30m`, `1h`, `7d`: the largest whole unit.
pub fn format_span(d: SignedDuration) -> String {
    let s = d.as_secs();
    match s {
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

impl FromStr for PeriodKind {
    type Err = PeriodError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "daily" => PeriodKind::Daily,
            "weekly" => PeriodKind::Weekly,
            "monthly" => PeriodKind::Monthly,
            "lifetime" => PeriodKind::Lifetime,
            _ => match s.strip_prefix("rolling:") {
                Some(w) => PeriodKind::Rolling(
                    parse_span(w).ok_or_else(|| PeriodError::BadWindow(w.to_string()))?,
                ),
                None => return Err(PeriodError::Unknown(s.to_string())),
            },
        })
    }
}

impl fmt::Display for PeriodKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeriodKind::Daily => f.write_str("daily"),
            PeriodKind::Weekly => f.write_str("weekly"),
            PeriodKind::Monthly => f.write_str("monthly"),
            PeriodKind::Lifetime => f.write_str("lifetime"),
            PeriodKind::Rolling(w) => write!(f, "rolling:{}", format_span(*w)),
        }
    }
}

/// When calendar periods reset, in which time zone.
#[derive(Clone, Debug, PartialEq)]
pub struct Calendar {
    pub tz: TimeZone,
    /// Borrowed for the default zone: one allocation less per budget.
    pub tz_name: std::borrow::Cow<'static, str>,
    /// Local time of day of the reset.
    pub reset_time: Time,
    /// Weekly periods start on this day.
    pub weekday: Weekday,
    /// Monthly periods start on this day (clamped to the month's length).
    pub day_of_month: i8,
}

impl Default for Calendar {
    fn default() -> Self {
        Calendar {
            tz: TimeZone::UTC,
            tz_name: std::borrow::Cow::Borrowed("UTC"),
            reset_time: Time::midnight(),
            weekday: Weekday::Monday,
            day_of_month: 1,
        }
    }
}

impl Calendar {
    pub fn new(
        tz: Option<&str>,
        reset_time: Option<&str>,
        weekday: Option<&str>,
        day: Option<i64>,
    ) -> Result<Calendar, PeriodError> {
        let mut c = Calendar::default();
        if let Some(name) = tz {
            c.tz = TimeZone::get(name).map_err(|_| PeriodError::BadZone(name.to_string()))?;
            c.tz_name = std::borrow::Cow::Owned(name.to_string());
        }
        if let Some(t) = reset_time {
            let (h, m) = t
                .split_once(':')
                .ok_or_else(|| PeriodError::BadTime(t.to_string()))?;
            let (h, m): (i8, i8) = (
                h.parse().map_err(|_| PeriodError::BadTime(t.to_string()))?,
                m.parse().map_err(|_| PeriodError::BadTime(t.to_string()))?,
            );
            c.reset_time =
                Time::new(h, m, 0, 0).map_err(|_| PeriodError::BadTime(t.to_string()))?;
        }
        if let Some(w) = weekday {
            c.weekday = match w.to_ascii_lowercase().as_str() {
                "monday" | "mon" => Weekday::Monday,
                "tuesday" | "tue" => Weekday::Tuesday,
                "wednesday" | "wed" => Weekday::Wednesday,
                "thursday" | "thu" => Weekday::Thursday,
                "friday" | "fri" => Weekday::Friday,
                "saturday" | "sat" => Weekday::Saturday,
                "sunday" | "sun" => Weekday::Sunday,
                _ => return Err(PeriodError::BadWeekday(w.to_string())),
            };
        }
        if let Some(d) = day {
            if !(1..=31).contains(&d) {
                return Err(PeriodError::BadDay(d));
            }
            c.day_of_month = d as i8;
        }
        Ok(c)
    }

    /// The instant of `date` at the reset time, in this zone.
    fn at(&self, date: Date) -> Timestamp {
        let dt = DateTime::from_parts(date, self.reset_time);
        // `compatible` resolution; a date near the supported range's edge
        // falls back to the UTC reading rather than failing.
        self.tz
            .to_zoned_datetime(dt)
            .map(|z| z.timestamp())
            .or_else(|_| TimeZone::UTC.to_zoned_datetime(dt).map(|z| z.timestamp()))
            .unwrap_or(Timestamp::UNIX_EPOCH)
    }

    fn local_date(&self, t: Timestamp) -> Date {
        t.to_zoned_datetime(self.tz.clone()).date()
    }

    fn month_start(&self, year: i16, month: i8) -> Date {
        let first = Date::new(year, month, 1).unwrap_or_default();
        let day = self.day_of_month.min(first.days_in_month());
        Date::new(year, month, day).unwrap_or(first)
    }
}

/// A budget period: `[start, end)`; `end` is `None` for lifetime budgets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Period {
    pub start: Timestamp,
    pub end: Option<Timestamp>,
}

impl PeriodKind {
    pub fn is_rolling(&self) -> bool {
        matches!(self, PeriodKind::Rolling(_))
    }

    /// The calendar period containing `t`. For rolling windows, the window
    /// ending at `t` (`end` is `t`).
    pub fn period_at(&self, cal: &Calendar, t: Timestamp) -> Period {
        match self {
            PeriodKind::Lifetime => Period {
                start: Timestamp::UNIX_EPOCH,
                end: None,
            },
            PeriodKind::Rolling(w) => Period {
                start: t.checked_sub(*w).unwrap_or(Timestamp::UNIX_EPOCH),
                end: Some(t),
            },
            PeriodKind::Daily => {
                let d = cal.local_date(t);
                let mut start = d;
                if cal.at(start) > t {
                    start = start.yesterday().unwrap_or(start);
                }
                let next = start.tomorrow().unwrap_or(start);
                Period {
                    start: cal.at(start),
                    end: Some(cal.at(next)),
                }
            }
            PeriodKind::Weekly => {
                let d = cal.local_date(t);
                let back = (d.weekday().to_monday_zero_offset()
                    - cal.weekday.to_monday_zero_offset())
                .rem_euclid(7);
                let mut start = d.checked_sub(jiff::Span::new().days(back)).unwrap_or(d);
                if cal.at(start) > t {
                    start = start
                        .checked_sub(jiff::Span::new().days(7))
                        .unwrap_or(start);
                }
                let next = start
                    .checked_add(jiff::Span::new().days(7))
                    .unwrap_or(start);
                Period {
                    start: cal.at(start),
                    end: Some(cal.at(next)),
                }
            }
            PeriodKind::Monthly => {
                let d = cal.local_date(t);
                let (mut y, mut m) = (d.year(), d.month());
                if cal.at(cal.month_start(y, m)) > t {
                    (y, m) = if m == 1 { (y - 1, 12) } else { (y, m - 1) };
                }
                let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                Period {
                    start: cal.at(cal.month_start(y, m)),
                    end: Some(cal.at(cal.month_start(ny, nm))),
                }
            }
        }
    }

    /// The period before the one containing `t` (for rollover); `None` for
    /// lifetime and rolling budgets.
    pub fn previous(&self, cal: &Calendar, t: Timestamp) -> Option<Period> {
        if matches!(self, PeriodKind::Lifetime | PeriodKind::Rolling(_)) {
            return None;
        }
        let cur = self.period_at(cal, t);
        let just_before = cur.start.checked_sub(SignedDuration::from_nanos(1)).ok()?;
        Some(self.period_at(cal, just_before))
    }

    /// Width of one rolling-window bucket: a sixtieth of the window (rounded
    /// up), at least a second. Spend is kept per bucket; a bucket counts while any
    /// of it is inside the window, so the window never under-counts.
    pub fn bucket_width(window: SignedDuration) -> SignedDuration {
        let secs = (window.as_secs() + 59) / 60;
        let secs = secs.max(1);
        SignedDuration::from_secs(secs)
    }
}

/// The bucket start for `t` in a rolling window.
pub fn bucket_start(window: SignedDuration, t: Timestamp) -> Timestamp {
    let w = PeriodKind::bucket_width(window).as_secs();
    let s = t.as_second().div_euclid(w) * w;
    Timestamp::from_second(s).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// The oldest bucket start whose spend counts in the window ending at `t`
/// (the last of [`window_buckets`], computed without walking them).
pub fn window_start(window: SignedDuration, t: Timestamp) -> Timestamp {
    let w = PeriodKind::bucket_width(window).as_secs();
    // The first bucket whose end lies after the window's start: the least
    // multiple of `w` above `t - window - w`.
    let edge = t.as_second() - window.as_secs() - w;
    let first = (edge.div_euclid(w) + 1) * w;
    Timestamp::from_second(first.min(bucket_start(window, t).as_second()))
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

/// Bucket starts whose spend counts in the window ending at `t`.
pub fn window_buckets(window: SignedDuration, t: Timestamp) -> Vec<Timestamp> {
    let w = PeriodKind::bucket_width(window).as_secs();
    let last = bucket_start(window, t).as_second();
    let first_edge = t.as_second() - window.as_secs();
    let mut out = Vec::new();
    let mut b = last;
    // Include every bucket whose end lies after the window's start.
    while b + w > first_edge {
        out.push(Timestamp::from_second(b).unwrap_or(Timestamp::UNIX_EPOCH));
        b -= w;
    }
    out
}

#[cfg(test)]
mod tests;
