use super::*;
use proptest::prelude::*;

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn cal(tz: &str, time: &str) -> Calendar {
    Calendar::new(Some(tz), Some(time), None, None).unwrap()
}

#[test]
fn parses_and_prints_period_kinds() {
    for s in [
        "daily",
        "weekly",
        "monthly",
        "lifetime",
        "rolling:1h",
        "rolling:30m",
        "rolling:7d",
    ] {
        assert_eq!(s.parse::<PeriodKind>().unwrap().to_string(), s);
    }
    assert!("rolling:0h".parse::<PeriodKind>().is_err());
    assert!("hourly".parse::<PeriodKind>().is_err());
    assert!(Calendar::new(Some("Mars/Olympus"), None, None, None).is_err());
    assert!(Calendar::new(None, Some("25:00"), None, None).is_err());
    assert!(Calendar::new(None, None, None, Some(32)).is_err());
}

#[test]
fn daily_resets_at_local_time() {
    let c = cal("America/New_York", "09:00");
    let p = PeriodKind::Daily.period_at(&c, ts("2026-11-24T13:59:00Z")); // 08:59 EST
    assert_eq!(p.start, ts("2026-11-23T14:00:00Z"));
    assert_eq!(p.end, Some(ts("2026-11-24T14:00:00Z")));
    let p = PeriodKind::Daily.period_at(&c, ts("2026-11-24T14:00:00Z"));
    assert_eq!(p.start, ts("2026-11-24T14:00:00Z"));
}

#[test]
fn dst_days_are_23_and_25_hours() {
    let c = cal("Europe/Berlin", "00:00");
    // 2026-03-29: clocks go 02:00 → 03:00.
    let p = PeriodKind::Daily.period_at(&c, ts("2026-03-29T12:00:00Z"));
    assert_eq!(p.end.unwrap().duration_since(p.start).as_hours(), 23);
    // 2026-10-25: clocks go 03:00 → 02:00.
    let p = PeriodKind::Daily.period_at(&c, ts("2026-10-25T12:00:00Z"));
    assert_eq!(p.end.unwrap().duration_since(p.start).as_hours(), 25);
    // A reset at 02:30 on the spring-forward day happens at 03:30 local.
    let c = cal("Europe/Berlin", "02:30");
    let p = PeriodKind::Daily.period_at(&c, ts("2026-03-29T12:00:00Z"));
    assert_eq!(p.start, ts("2026-03-29T01:30:00Z"));
}

#[test]
fn monthly_clamps_to_month_end_and_handles_leap_years() {
    let c = Calendar::new(Some("UTC"), None, None, Some(31)).unwrap();
    let p = PeriodKind::Monthly.period_at(&c, ts("2028-02-15T00:00:00Z"));
    assert_eq!(p.start, ts("2028-01-31T00:00:00Z"));
    assert_eq!(p.end, Some(ts("2028-02-29T00:00:00Z")), "leap year");
    let p = PeriodKind::Monthly.period_at(&c, ts("2027-03-01T00:00:00Z"));
    assert_eq!(p.start, ts("2027-02-28T00:00:00Z"));
    assert_eq!(p.end, Some(ts("2027-03-31T00:00:00Z")));
    let c = Calendar::default();
    let p = PeriodKind::Monthly.period_at(&c, ts("2026-12-31T23:59:59Z"));
    assert_eq!(p.end, Some(ts("2027-01-01T00:00:00Z")), "year end");
}

#[test]
fn weekly_starts_on_the_configured_day() {
    let c = Calendar::new(Some("Asia/Tokyo"), Some("06:00"), Some("sunday"), None).unwrap();
    // 2026-11-24 is a Tuesday.
    let p = PeriodKind::Weekly.period_at(&c, ts("2026-11-24T00:00:00Z"));
    assert_eq!(p.start, ts("2026-11-21T21:00:00Z")); // Sunday 06:00 JST
    assert_eq!(p.end, Some(ts("2026-11-28T21:00:00Z")));
}

#[test]
fn rolling_buckets_cover_the_window() {
    let w = SignedDuration::from_hours(1);
    let t = ts("2026-11-24T12:00:30Z");
    let b = window_buckets(w, t);
    assert_eq!(b.len(), 61);
    assert_eq!(b[0], ts("2026-11-24T12:00:00Z"));
    assert_eq!(*b.last().unwrap(), ts("2026-11-24T11:00:00Z"));
    assert!(
        PeriodKind::Daily
            .previous(&Calendar::default(), t)
            .is_some()
    );
    assert!(
        PeriodKind::Rolling(w)
            .previous(&Calendar::default(), t)
            .is_none()
    );
}

const ZONES: [&str; 8] = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe", // 30-minute DST shift
    "Asia/Kathmandu",      // +05:45
    "Pacific/Apia",        // skipped a whole day in 2011
    "America/Santiago",    // DST at midnight
    "Asia/Tokyo",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Every instant lies in exactly one period; periods tile time.
    #[test]
    fn calendar_periods_contain_and_tile(
        secs in 946_684_800i64..4_102_444_800, // 2000..2100
        zone in 0usize..ZONES.len(),
        kind in 0usize..3,
        hour in 0i8..24,
        minute in prop::sample::select(vec![0i8, 30, 45]),
        day in 1i64..=31,
        weekday in prop::sample::select(vec!["monday", "wednesday", "sunday"]),
    ) {
        let t = Timestamp::from_second(secs).unwrap();
        let c = Calendar::new(Some(ZONES[zone]), Some(&format!("{hour:02}:{minute:02}")), Some(weekday), Some(day)).unwrap();
        let k = [PeriodKind::Daily, PeriodKind::Weekly, PeriodKind::Monthly][kind];
        let p = k.period_at(&c, t);
        let end = p.end.unwrap();
        prop_assert!(p.start <= t && t < end, "{k} {t} not in [{}, {end})", p.start);
        // The next period starts exactly where this one ends, and the
        // period of its start is itself.
        let next = k.period_at(&c, end);
        prop_assert_eq!(next.start, end);
        prop_assert_eq!(k.period_at(&c, p.start), p);
        let prev = k.previous(&c, t).unwrap();
        prop_assert_eq!(prev.end, Some(p.start));
        let hours = end.duration_since(p.start).as_secs() / 3600;
        match k {
            PeriodKind::Daily => prop_assert!((22..=26).contains(&hours), "{hours}h"),
            // Apia skipped 30 December 2011: that week had 144 hours.
            PeriodKind::Weekly => prop_assert!((144..=170).contains(&hours), "{hours}h"),
            _ => prop_assert!((27 * 24..=32 * 24).contains(&hours), "{hours}h"),
        }
    }

    #[test]
    fn rolling_window_never_undercounts(secs in 946_684_800i64..4_102_444_800, window in 1i64..100_000, back in 0i64..200_000) {
        let w = SignedDuration::from_secs(window);
        let t = Timestamp::from_second(secs).unwrap();
        let spent_at = Timestamp::from_second(secs - back).unwrap();
        let buckets = window_buckets(w, t);
        let inside = back <= window;
        if inside {
            prop_assert!(buckets.contains(&bucket_start(w, spent_at)), "spend inside the window must count");
        }
        prop_assert!(buckets.len() <= 62);
    }

    #[test]
    fn window_start_is_the_oldest_bucket_of_the_window(secs in 946_684_800i64..4_102_444_800, window in 1i64..200_000) {
        let w = SignedDuration::from_secs(window);
        let t = Timestamp::from_second(secs).unwrap();
        prop_assert_eq!(Some(window_start(w, t)), window_buckets(w, t).last().copied());
    }
}
