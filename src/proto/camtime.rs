//! Liberal parsing of the timestamps cameras put in their events: RFC 3339 and what cameras
//! actually send (`2019-02-20T15:22:34-8:00`, `2009-11-14T15:27Z` without seconds,
//! `2019-02-20 13:49:58` without a zone, `0000-00-00T00:00:00Z` from a camera with no clock).
//! The result is advisory (it goes in the event detail; `ts` is always the gateway's).

/// Unix milliseconds, or `None` when the text is not a usable time (year 0000, garbage).
pub fn parse(s: &str) -> Option<i64> {
    let s = s.trim();
    let (date, rest) = s.split_at(s.find(['T', ' ']).unwrap_or(s.len()));
    let mut d = date.split('-');
    let year: i32 = d.next()?.parse().ok()?;
    let month: u8 = d.next()?.parse().ok()?;
    let day: u8 = d.next()?.parse().ok()?;
    if year < 1970 {
        return None;
    }
    let rest = rest.get(1..).unwrap_or("");
    // Split the time from the zone: Z, or the last + / - .
    let (time, zone) = match rest.find(['Z', 'z', '+']).or_else(|| rest.rfind('-')) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let mut t = time.split(':');
    let hour: u8 = t
        .next()
        .filter(|x| !x.is_empty())
        .unwrap_or("0")
        .parse()
        .ok()?;
    let minute: u8 = t.next().unwrap_or("0").parse().ok()?;
    let sec_text = t.next().unwrap_or("0");
    let (sec, frac) = sec_text.split_once('.').unwrap_or((sec_text, ""));
    let second: u8 = sec.parse().ok()?;
    let millis: i64 = frac
        .get(..frac.len().min(3))
        .and_then(|f| format!("{f:0<3}").parse().ok())
        .unwrap_or(0);
    let offset_min: i64 = match zone {
        "" | "Z" | "z" => 0,
        // Byte arithmetic below: a zone with non-ASCII text is not a zone (fuzz finding).
        z if !z.is_ascii() => return None,
        z => {
            let sign = if z.starts_with('-') { -1 } else { 1 };
            let z = &z[1..];
            let (h, m) = z.split_once(':').unwrap_or(if z.len() > 2 {
                z.split_at(z.len() - 2)
            } else {
                (z, "0")
            });
            sign * (h.parse::<i64>().ok()? * 60 + m.parse::<i64>().ok()?)
        }
    };
    let date =
        time::Date::from_calendar_date(year, time::Month::try_from(month).ok()?, day).ok()?;
    let tm = time::Time::from_hms(hour, minute, second.min(59)).ok()?;
    let utc = time::PrimitiveDateTime::new(date, tm)
        .assume_utc()
        .unix_timestamp()
        - offset_min * 60;
    Some(utc * 1000 + millis)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::rfc3339_ms;

    #[test]
    fn fuzz_crash_a_multibyte_character_in_the_zone_is_refused_not_sliced() {
        // fuzz/artifacts/camtime/crash-500adbbb: `split_at` inside a two-byte character.
        assert_eq!(parse("2009-1-1T5:2z11255:27\u{5e5}Z"), None);
        assert_eq!(parse("2009-01-01T05:02:00+ץ1"), None);
    }

    #[test]
    fn real_camera_timestamps_parse() {
        assert_eq!(
            rfc3339_ms(parse("2019-02-20T15:22:34-8:00").unwrap()),
            "2019-02-20T23:22:34.000Z"
        );
        assert_eq!(
            rfc3339_ms(parse("2009-11-14T15:27Z").unwrap()),
            "2009-11-14T15:27:00.000Z"
        );
        assert_eq!(
            rfc3339_ms(parse("2019-02-20 13:49:58").unwrap()),
            "2019-02-20T13:49:58.000Z"
        );
        assert_eq!(
            rfc3339_ms(parse("2024-05-01T10:00:00.25+07:00").unwrap()),
            "2024-05-01T03:00:00.250Z"
        );
        assert_eq!(
            rfc3339_ms(parse("2024-05-01T10:00:00+0700").unwrap()),
            "2024-05-01T03:00:00.000Z"
        );
        assert_eq!(parse("0000-00-00T00:00:00Z"), None);
        assert_eq!(parse("yesterday"), None);
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in ".{0,40}") {
            let _ = parse(&s);
        }
    }
}
