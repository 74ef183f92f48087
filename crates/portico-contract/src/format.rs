//! The string formats that are checked. Each follows its RFC's grammar; none allocates.

use crate::schema::Format;

pub(crate) fn string_matches(f: Format, s: &str) -> bool {
    match f {
        // Integer formats constrain numbers, not strings.
        Format::Int32 | Format::Int64 => true,
        Format::Date => date(s.as_bytes()),
        Format::Time => time(s.as_bytes()),
        Format::DateTime => match s.as_bytes().iter().position(|b| *b == b'T' || *b == b't') {
            Some(i) => date(&s.as_bytes()[..i]) && time(&s.as_bytes()[i + 1..]),
            None => false,
        },
        Format::Uuid => uuid(s.as_bytes()),
        Format::Ipv4 => ipv4(s),
        Format::Ipv6 => s.parse::<std::net::Ipv6Addr>().is_ok(),
        Format::Email => email(s),
    }
}

fn digits(b: &[u8]) -> Option<u32> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0, |n, d| n * 10 + u32::from(d - b'0')))
}

/// RFC 3339 `full-date`: `YYYY-MM-DD`, a day that exists.
fn date(b: &[u8]) -> bool {
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return false;
    }
    let (Some(y), Some(m), Some(d)) = (digits(&b[..4]), digits(&b[5..7]), digits(&b[8..])) else {
        return false;
    };
    let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&d)
}

/// RFC 3339 `full-time`: `HH:MM:SS[.frac](Z|±HH:MM)`.
fn time(b: &[u8]) -> bool {
    if b.len() < 9 || b[2] != b':' || b[5] != b':' {
        return false;
    }
    let (Some(h), Some(m), Some(s)) = (digits(&b[..2]), digits(&b[3..5]), digits(&b[6..8])) else {
        return false;
    };
    // 60 for a leap second.
    if h > 23 || m > 59 || s > 60 {
        return false;
    }
    let mut rest = &b[8..];
    let local = (h * 60 + m) as i32;
    if let Some(frac) = rest.strip_prefix(b".") {
        let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return false;
        }
        rest = &frac[n..];
    }
    // The offset, in minutes east of UTC.
    let offset = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            match (digits(&[*h1, *h2]), digits(&[*m1, *m2])) {
                (Some(oh), Some(om)) if oh <= 23 && om <= 59 => {
                    let o = (oh * 60 + om) as i32;
                    if *sign == b'-' { -o } else { o }
                }
                _ => return false,
            }
        }
        _ => return false,
    };
    // A leap second is inserted at the end of a UTC day only: 23:59:60Z.
    s < 60 || (local - offset).rem_euclid(1440) == 1439
}

/// RFC 4122's text form: 8-4-4-4-12 hex digits.
fn uuid(b: &[u8]) -> bool {
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// Dotted quad without leading zeros (which some readers take for octal).
fn ipv4(s: &str) -> bool {
    s.parse::<std::net::Ipv4Addr>().is_ok()
}

/// `local@domain`: a non-empty local part of printable characters without spaces, and a
/// domain of dot-separated labels. The full RFC 5321 grammar (quoted local parts, address
/// literals) is not accepted.
fn email(s: &str) -> bool {
    let Some((local, domain)) = s.rsplit_once('@') else {
        return false;
    };
    // One pass over each part: a body's addresses are checked on every request.
    let local = local.as_bytes();
    let mut prev = b'.';
    for &c in local {
        let ok = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'/'
                    | b'='
                    | b'?'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'{'
                    | b'|'
                    | b'}'
                    | b'~'
                    | b'.'
            );
        // No dot first, and no two in a row.
        if !ok || (c == b'.' && prev == b'.') {
            return false;
        }
        prev = c;
    }
    if local.is_empty() || local.len() > 64 || prev == b'.' {
        return false;
    }
    let domain = domain.as_bytes();
    if domain.is_empty() || domain.len() > 253 {
        return false;
    }
    // Labels of letters, digits and inner hyphens, 1 to 63 long.
    let mut label = 0usize;
    let mut prev = b'.';
    for &c in domain {
        if c == b'.' {
            if label == 0 || prev == b'-' {
                return false;
            }
            label = 0;
        } else if c.is_ascii_alphanumeric() || (c == b'-' && label > 0) {
            label += 1;
            if label > 63 {
                return false;
            }
        } else {
            return false;
        }
        prev = c;
    }
    label > 0 && prev != b'-'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_accept_their_grammar_and_nothing_near_it() {
        let yes = [
            (Format::Date, "2024-02-29"),
            (Format::DateTime, "2026-12-06T18:32:28Z"),
            (Format::DateTime, "2026-12-06t18:32:28.123+01:00"),
            (Format::Time, "23:59:60Z"),
            (Format::Time, "00:59:60+01:00"),
            (Format::Uuid, "123e4567-e89b-12d3-a456-426614174000"),
            (Format::Ipv4, "192.0.2.1"),
            (Format::Ipv6, "2001:db8::1"),
            (Format::Email, "ada.lovelace+x@example.com"),
        ];
        for (f, s) in yes {
            assert!(string_matches(f, s), "{f:?} should accept {s}");
        }
        let no = [
            (Format::Date, "2023-02-29"),
            (Format::Date, "2024-13-01"),
            (Format::Date, "2024-1-01"),
            (Format::DateTime, "2026-12-06 18:32:28Z"),
            (Format::DateTime, "2026-12-06T18:32:28"),
            (Format::DateTime, "2026-12-06T24:00:00Z"),
            (Format::Time, "12:00:00.Z"),
            (Format::Time, "12:00:60Z"),
            (Format::DateTime, "2016-12-31T23:59:60+01:00"),
            (Format::Uuid, "123e4567e89b12d3a456426614174000"),
            (Format::Ipv4, "192.0.2.01"),
            (Format::Ipv4, "256.0.0.1"),
            (Format::Ipv6, "2001:db8::g"),
            (Format::Email, "no-at.example.com"),
            (Format::Email, "a..b@example.com"),
            (Format::Email, "a@-example.com"),
        ];
        for (f, s) in no {
            assert!(!string_matches(f, s), "{f:?} should refuse {s}");
        }
    }
}
