//! HTTP dates (RFC 9110 §5.6.7): the IMF-fixdate every sender must use, and the two
//! obsolete formats every recipient must still accept — RFC 850 dates (two-digit years)
//! and C's asctime. Parsed leniently, as §5.6.7 encourages: day, month and zone names in
//! any case, any run of spaces between the parts, and a weekday that is a weekday's name
//! but not the date's (which the date decides, as in Squid and curl).
//!
//! ```text
//! Sun, 06 Nov 1994 08:49:37 GMT    ; IMF-fixdate
//! Sunday, 06-Nov-94 08:49:37 GMT   ; obsolete RFC 850 format
//! Sun Nov  6 08:49:37 1994         ; ANSI C's asctime() format
//! ```

use std::time::{Duration, SystemTime, UNIX_EPOCH};

const DAYS: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

const MONTHS: [&[u8; 3]; 12] = [
    b"jan", b"feb", b"mar", b"apr", b"may", b"jun", b"jul", b"aug", b"sep", b"oct", b"nov", b"dec",
];

/// The time a date field value names, or `None` when it is none of the three formats.
pub(crate) fn parse_http_date(value: &[u8]) -> Option<SystemTime> {
    parse_at(value, current_year())
}

/// [`parse_http_date`], with the year that an RFC 850 date's two digits are read against.
pub(crate) fn parse_at(value: &[u8], this_year: i64) -> Option<SystemTime> {
    let value = std::str::from_utf8(value).ok()?.trim();
    let (weekday, rest) = match value.split_once(',') {
        Some((weekday, rest)) => (weekday.trim(), Some(rest)),
        None => (value.split_ascii_whitespace().next()?, None),
    };
    let date = match rest {
        // IMF-fixdate, or RFC 850: "06 Nov 1994 08:49:37 GMT", "06-Nov-94 08:49:37 GMT".
        Some(rest) => {
            let mut parts = rest.split_ascii_whitespace();
            let first = parts.next()?;
            let (day, month, year) = if first.contains('-') {
                weekday_named(weekday, false)?;
                let mut pieces = first.split('-');
                let (day, month, year) = (pieces.next()?, pieces.next()?, pieces.next()?);
                if pieces.next().is_some() || year.len() != 2 {
                    return None;
                }
                (day, month, two_digit_year(number(year)?, this_year))
            } else {
                weekday_named(weekday, true)?;
                let (month, year) = (parts.next()?, parts.next()?);
                if year.len() != 4 {
                    return None;
                }
                (first, month, number(year)?)
            };
            let time = parts.next()?;
            if !parts.next()?.eq_ignore_ascii_case("gmt") || parts.next().is_some() {
                return None;
            }
            Civil::new(year, month, day, time)?
        }
        // asctime: "Sun Nov  6 08:49:37 1994".
        None => {
            let mut parts = value.split_ascii_whitespace();
            weekday_named(parts.next()?, true)?;
            let (month, day, time, year) =
                (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
            if parts.next().is_some() || year.len() != 4 {
                return None;
            }
            Civil::new(number(year)?, month, day, time)?
        }
    };
    date.to_system_time()
}

/// Whether `name` is a weekday's three-letter (`short`) or full name, in any case.
fn weekday_named(name: &str, short: bool) -> Option<()> {
    DAYS.iter()
        .any(|day| {
            if short {
                name.eq_ignore_ascii_case(&day[..3])
            } else {
                name.eq_ignore_ascii_case(day)
            }
        })
        .then_some(())
}

/// A number of ASCII digits only (no sign, no spaces).
fn number(digits: &str) -> Option<i64> {
    if digits.is_empty() || digits.len() > 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// RFC 9110 §5.6.7: a two-digit year more than 50 years in the future is the most recent
/// past year with those digits. So the year is the one with those digits within 49 years
/// before `this_year` and 50 after.
fn two_digit_year(digits: i64, this_year: i64) -> i64 {
    let year = this_year - this_year.rem_euclid(100) + digits;
    if year > this_year + 50 {
        year - 100
    } else if year <= this_year - 50 {
        year + 100
    } else {
        year
    }
}

/// A calendar date and time of day, checked.
struct Civil {
    year: i64,
    month: i64,
    day: i64,
    seconds: i64,
}

impl Civil {
    fn new(year: i64, month: &str, day: &str, time: &str) -> Option<Self> {
        let month = MONTHS
            .iter()
            .position(|name| month.as_bytes().eq_ignore_ascii_case(&name[..]))?;
        let month = i64::try_from(month).ok()? + 1;
        if day.len() > 2 {
            return None;
        }
        let day = number(day)?;
        if day < 1 || day > days_in_month(year, month) {
            return None;
        }
        let mut clock = time.split(':');
        let (hour, minute, second) = (clock.next()?, clock.next()?, clock.next()?);
        if clock.next().is_some() || [hour, minute, second].iter().any(|part| part.len() != 2) {
            return None;
        }
        let (hour, minute, second) = (number(hour)?, number(minute)?, number(second)?);
        // A leap second (60) is read as the second before the next minute.
        if hour > 23 || minute > 59 || second > 60 {
            return None;
        }
        Some(Self {
            year,
            month,
            day,
            seconds: hour * 3600 + minute * 60 + second.min(59),
        })
    }

    fn to_system_time(&self) -> Option<SystemTime> {
        let seconds = days_from_civil(self.year, self.month, self.day) * 86_400 + self.seconds;
        let magnitude = Duration::from_secs(seconds.unsigned_abs());
        if seconds >= 0 {
            UNIX_EPOCH.checked_add(magnitude)
        } else {
            UNIX_EPOCH.checked_sub(magnitude)
        }
    }
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The current year (UTC), for RFC 850 dates.
fn current_year() -> i64 {
    let days = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_secs() / 86_400).unwrap_or(0)
        });
    // The inverse of `days_from_civil`, for the year only.
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let year = year_of_era + era * 400;
    if month_from_march >= 10 {
        year + 1
    } else {
        year
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(value: &str) -> Option<SystemTime> {
        parse_at(value.as_bytes(), 2026)
    }

    fn secs(value: &str) -> Option<u64> {
        at(value).map(|time| time.duration_since(UNIX_EPOCH).unwrap().as_secs())
    }

    #[test]
    fn the_three_formats_of_rfc9110_5_6_7_name_the_same_time() {
        // The section's own example.
        let expected = Some(784_111_777);
        assert_eq!(secs("Sun, 06 Nov 1994 08:49:37 GMT"), expected);
        assert_eq!(secs("Sunday, 06-Nov-94 08:49:37 GMT"), expected);
        assert_eq!(secs("Sun Nov  6 08:49:37 1994"), expected);
    }

    #[test]
    fn names_in_any_case_and_extra_spaces_are_tolerated() {
        let expected = Some(784_111_777);
        for value in [
            "sun, 06 nov 1994 08:49:37 gmt",
            "SUN, 06 NOV 1994 08:49:37 GMT",
            "Sun,  06 Nov 1994  08:49:37 Gmt",
            "SUNDAY, 06-nov-94 08:49:37 gmt",
            "sun NOV 6 08:49:37 1994",
            " Sun, 06 Nov 1994 08:49:37 GMT ",
        ] {
            assert_eq!(secs(value), expected, "{value}");
        }
        // The date decides, not the weekday's name.
        assert_eq!(secs("Mon, 06 Nov 1994 08:49:37 GMT"), expected);
    }

    #[test]
    fn what_is_not_a_date_is_none() {
        for value in [
            "",
            "0",
            "-1",
            "never",
            "Sun, 06 Nov 1994 08:49:37",
            "Sun, 06 Nov 1994 08:49:37 PST",
            "Sun, 06 Nov 94 08:49:37 GMT",
            "Sun, 31 Nov 1994 08:49:37 GMT",
            "Sun, 29 Feb 1995 08:49:37 GMT",
            "Sun, 06 Nov 1994 24:00:00 GMT",
            "Sun, 06 Nov 1994 8:49:37 GMT",
            "Sunday, 06-Nov-1994 08:49:37 GMT",
            "Sun, 06-Nov-94 08:49:37 GMT",
            "Funday, 06 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 08:49:37 GMT extra",
            "Sun Nov  6 08:49:37 94",
            "Sun, +6 Nov 1994 08:49:37 GMT",
        ] {
            assert_eq!(at(value), None, "{value:?}");
        }
        assert_eq!(parse_at(b"Sun, 06 Nov 1994 08:49:37 GMT\xff", 2026), None);
    }

    #[test]
    fn leap_days_and_seconds() {
        assert!(at("Thu, 29 Feb 2024 00:00:00 GMT").is_some());
        assert!(at("Tue, 29 Feb 2000 00:00:00 GMT").is_some());
        assert!(at("Thu, 29 Feb 1900 00:00:00 GMT").is_none());
        assert_eq!(
            secs("Sat, 31 Dec 2016 23:59:60 GMT"),
            secs("Sat, 31 Dec 2016 23:59:59 GMT")
        );
    }

    #[test]
    fn dates_before_1970_are_times_too() {
        let time = at("Thu, 01 Jan 1960 00:00:00 GMT").unwrap();
        assert_eq!(
            UNIX_EPOCH.duration_since(time).unwrap().as_secs(),
            315_619_200
        );
    }

    #[test]
    fn two_digit_years_more_than_50_years_ahead_are_in_the_past() {
        assert_eq!(two_digit_year(26, 2026), 2026);
        assert_eq!(
            two_digit_year(76, 2026),
            2076,
            "50 years ahead: not more than 50"
        );
        assert_eq!(two_digit_year(77, 2026), 1977);
        assert_eq!(two_digit_year(94, 2026), 1994);
        assert_eq!(two_digit_year(0, 2026), 2000);
        assert_eq!(two_digit_year(94, 2050), 2094);
        assert_eq!(two_digit_year(1, 2099), 2101);
        assert_eq!(two_digit_year(49, 2099), 2149);
        assert_eq!(two_digit_year(50, 2099), 2050);
    }

    #[test]
    fn the_current_year_is_read_from_the_clock() {
        let year = current_year();
        assert!((2024..2200).contains(&year), "{year}");
        let formatted = httpdate::fmt_http_date(SystemTime::now());
        assert!(formatted.contains(&year.to_string()), "{formatted}");
    }

    /// A time from 1970 to 9999, whole seconds.
    fn time() -> impl Strategy<Value = SystemTime> {
        (0u64..253_402_300_800).prop_map(|secs| UNIX_EPOCH + Duration::from_secs(secs))
    }

    /// `value` with each letter's case flipped where `flips` says.
    fn recase(value: &str, flips: &[bool]) -> String {
        value
            .chars()
            .zip(flips.iter().cycle())
            .map(|(c, &flip)| {
                if flip {
                    if c.is_ascii_uppercase() {
                        c.to_ascii_lowercase()
                    } else {
                        c.to_ascii_uppercase()
                    }
                } else {
                    c
                }
            })
            .collect()
    }

    proptest! {
        #[test]
        fn every_imf_fixdate_round_trips_in_any_case(
            time in time(),
            flips in proptest::collection::vec(any::<bool>(), 1..32),
        ) {
            let formatted = httpdate::fmt_http_date(time);
            prop_assert_eq!(at(&recase(&formatted, &flips)), Some(time));
        }

        #[test]
        fn asctime_and_rfc850_name_the_imf_fixdate_time(time in time()) {
            // Rewritten from the IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT".
            let imf = httpdate::fmt_http_date(time);
            let parts: Vec<&str> = imf.split_ascii_whitespace().collect();
            let (weekday, day, month, year, clock) =
                (&parts[0][..3], parts[1], parts[2], parts[3], parts[4]);
            let asctime = format!("{weekday} {month} {:>2} {clock} {year}", day.trim_start_matches('0'));
            prop_assert_eq!(at(&asctime), Some(time));
            let full = DAYS.iter().find(|name| name[..3].eq_ignore_ascii_case(weekday)).unwrap();
            let rfc850 = format!("{full}, {day}-{month}-{} {clock} GMT", &year[2..]);
            let year: i64 = year.parse().unwrap();
            // Read in a year that puts the two digits back in the right century.
            prop_assert_eq!(parse_at(rfc850.as_bytes(), year), Some(time));
        }

        #[test]
        fn any_bytes_parse_or_not_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..48)) {
            let _ = parse_at(&bytes, 2026);
        }
    }
}
