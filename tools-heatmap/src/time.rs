//! The records' time stamps: RFC 3339 with a zone offset (as
//! `output::rfc3339_now` writes them), read to microseconds since the epoch
//! and printed back as wall-clock time in the capture's own zone.

/// A moment, and the zone offset it was written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// Microseconds since 1970-01-01T00:00:00Z.
    pub micros: i64,
    /// The zone's offset from UTC, in seconds.
    pub offset: i32,
}

impl Stamp {
    /// Reads `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`.
    pub fn parse(text: &str) -> Option<Stamp> {
        let b = text.as_bytes();
        let num = |from: usize, len: usize| -> Option<i64> {
            let digits = b.get(from..from + len)?;
            digits.iter().all(u8::is_ascii_digit).then(|| digits.iter().fold(0, |n, d| n * 10 + (d - b'0') as i64))
        };
        let sep = |at: usize, c: &[u8]| b.get(at).is_some_and(|x| c.contains(x));
        if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
            return None;
        }
        let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
        let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
        if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
            return None;
        }
        let mut at = 19;
        let mut micros = 0i64;
        if sep(at, b".") {
            at += 1;
            let digits = b[at..].iter().take_while(|d| d.is_ascii_digit()).count();
            if digits == 0 {
                return None;
            }
            for i in 0..6 {
                micros = micros * 10 + if i < digits { (b[at + i] - b'0') as i64 } else { 0 };
            }
            at += digits;
        }
        let offset = match b.get(at)? {
            b'Z' | b'z' if at + 1 == b.len() => 0,
            sign @ (b'+' | b'-') if at + 6 == b.len() && sep(at + 3, b":") => {
                let minutes = num(at + 1, 2)? * 60 + num(at + 4, 2)?;
                (if *sign == b'-' { -minutes } else { minutes } * 60) as i32
            }
            _ => return None,
        };
        let days = days_from_civil(year, month as u32, day as u32);
        let local = days * 86_400 + hour * 3600 + minute * 60 + second;
        Some(Stamp { micros: (local - offset as i64) * 1_000_000 + micros, offset })
    }

    /// Seconds since the epoch.
    pub fn secs(&self) -> f64 {
        self.micros as f64 / 1e6
    }

    /// The same zone, another moment.
    pub fn at(&self, micros: i64) -> Stamp {
        Stamp { micros, offset: self.offset }
    }

    /// Local (year, month, day, hour, minute, second, microsecond).
    fn fields(&self) -> (i64, u32, u32, u32, u32, u32, u32) {
        let local = self.micros + self.offset as i64 * 1_000_000;
        let (secs, micros) = (local.div_euclid(1_000_000), local.rem_euclid(1_000_000) as u32);
        let (days, in_day) = (secs.div_euclid(86_400), secs.rem_euclid(86_400) as u32);
        let (y, m, d) = civil_from_days(days);
        (y, m, d, in_day / 3600, in_day / 60 % 60, in_day % 60, micros)
    }

    /// `HH:MM:SS`, with `decimals` digits of the second after it.
    pub fn clock(&self, decimals: usize) -> String {
        let (_, _, _, h, m, s, us) = self.fields();
        match decimals.min(6) {
            0 => format!("{h:02}:{m:02}:{s:02}"),
            n => format!("{h:02}:{m:02}:{s:02}.{:0n$}", us / 10u32.pow(6 - n as u32)),
        }
    }

    /// `YYYY-MM-DD`.
    pub fn date(&self) -> String {
        let (y, m, d, ..) = self.fields();
        format!("{y:04}-{m:02}-{d:02}")
    }

    /// `UTC+01:00`.
    pub fn zone(&self) -> String {
        let minutes = self.offset / 60;
        let sign = if minutes < 0 { '-' } else { '+' };
        format!("UTC{sign}{:02}:{:02}", minutes.abs() / 60, minutes.abs() % 60)
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day counted from 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + (month <= 2) as i64, month, day)
}

/// A length of time with its unit, three significant digits: `512 ns`,
/// `4.1 ms`, `2.5 s`.
pub fn duration(ns: f64) -> String {
    let (value, unit) = match ns.abs() {
        v if v >= 1e9 => (ns / 1e9, "s"),
        v if v >= 1e6 => (ns / 1e6, "ms"),
        v if v >= 1e3 => (ns / 1e3, "µs"),
        _ => (ns, "ns"),
    };
    let decimals = match value.abs() {
        v if v >= 99.95 => 0,
        v if v >= 9.995 => 1,
        _ => 2,
    };
    format!("{} {unit}", trimmed(value, decimals))
}

/// `value` with at most `decimals` decimals, trailing zeros dropped.
pub fn trimmed(value: f64, decimals: usize) -> String {
    let text = format!("{value:.decimals$}");
    match text.contains('.') {
        true => text.trim_end_matches('0').trim_end_matches('.').to_owned(),
        false => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_the_tools_write_and_prints_it_back() {
        let t = Stamp::parse("2026-11-24T10:00:01.250000+01:00").unwrap();
        assert_eq!(t.micros, 1_795_510_801_250_000);
        assert_eq!(
            (t.date(), t.clock(0), t.clock(3), t.zone()),
            ("2026-11-24".into(), "10:00:01".into(), "10:00:01.250".into(), "UTC+01:00".into())
        );
        let utc = Stamp::parse("2026-11-24T09:00:01.25Z").unwrap();
        assert_eq!((utc.micros, utc.offset), (t.micros, 0));
        let west = Stamp::parse("2024-02-29T23:59:59-05:30").unwrap();
        assert_eq!(
            (west.date(), west.clock(0), west.zone()),
            ("2024-02-29".into(), "23:59:59".into(), "UTC-05:30".into())
        );
        assert_eq!(Stamp::parse("1969-12-31T23:59:59.5Z").unwrap().micros, -500_000);
    }

    #[test]
    fn refuses_what_is_not_rfc_3339() {
        for bad in [
            "",
            "2026-11-24",
            "2026-11-24T10:00:01",
            "2026-13-01T00:00:00Z",
            "2026-11-24T10:00:01.+01:00",
            "2026-11-24T10:00:01+0100",
            "2026-11-24T10:00:01Zx",
        ] {
            assert_eq!(Stamp::parse(bad), None, "{bad}");
        }
    }
}
