//! Sizes as the LINSTOR client reads them: a number and an optional unit
//! (`B` when none, `K`/`KiB`, `kB`, `M`/`MiB`, `MB`, `G`/`GiB`, `GB`, `T`,
//! `TB`, `P`, `PB`, `S` for 512-byte sectors; case-insensitive), rounded up
//! to whole KiB.

/// Parses a size into KiB. Errors quote the size as it was typed.
pub fn parse_kib(typed: &str) -> Result<i64, String> {
    let s = typed.trim();
    let too_large = || format!("'{typed}' is too large a size");
    let digits: String = s.chars().take_while(|c| c.is_ascii_digit()).collect();
    if digits.is_empty() {
        return Err(format!("'{typed}' is not a size: it must start with a number"));
    }
    let n: u128 = digits.parse().map_err(|_| too_large())?;
    let unit = s[digits.len()..].trim();
    let bytes_per: u128 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "s" => 512,
        "k" | "kib" => 1 << 10,
        "kb" => 1000,
        "m" | "mib" => 1 << 20,
        "mb" => 1_000_000,
        "g" | "gib" => 1 << 30,
        "gb" => 1_000_000_000,
        "t" | "tib" => 1 << 40,
        "tb" => 1_000_000_000_000,
        "p" | "pib" => 1 << 50,
        "pb" => 1_000_000_000_000_000,
        _ => return Err(format!("'{typed}' is not a size: '{unit}' is not a unit (use K, M, G, T, P, or KiB, MB, ...)")),
    };
    let bytes = n.checked_mul(bytes_per).ok_or_else(too_large)?;
    i64::try_from(bytes.div_ceil(1024)).map_err(|_| too_large())
}

/// Formats KiB for tables: `1 GiB`, `512 MiB`, `3.50 GiB`.
pub fn human_kib(kib: i64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut v = kib as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if (v - v.round()).abs() < 0.005 { format!("{} {}", v.round() as i64, UNITS[u]) } else { format!("{v:.2} {}", UNITS[u]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_follow_the_linstor_client() {
        assert_eq!(parse_kib("1G"), Ok(1 << 20));
        assert_eq!(parse_kib("1GiB"), Ok(1 << 20));
        assert_eq!(parse_kib("512m"), Ok(512 << 10));
        assert_eq!(parse_kib("1KiB"), Ok(1));
        assert_eq!(parse_kib("1500"), Ok(2), "bytes, rounded up");
        assert_eq!(parse_kib("1MB"), Ok(977));
        assert_eq!(parse_kib("8 s"), Ok(4));
        assert_eq!(parse_kib("G"), Err("'G' is not a size: it must start with a number".into()));
        assert_eq!(
            parse_kib("1 Parsec"),
            Err("'1 Parsec' is not a size: 'Parsec' is not a unit (use K, M, G, T, P, or KiB, MB, ...)".into())
        );
        assert_eq!(parse_kib("99999999999999999999999P"), Err("'99999999999999999999999P' is too large a size".into()));
        assert_eq!(
            parse_kib("9999999999999999999999999999999999999999"),
            Err("'9999999999999999999999999999999999999999' is too large a size".into())
        );
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human_kib(1 << 20), "1 GiB");
        assert_eq!(human_kib(512), "512 KiB");
        assert_eq!(human_kib(3670016), "3.50 GiB");
    }
}
