//! Sizes as operators write them: `"2GiB"`, `"512MiB"`, `"100MB"`, or a plain number of bytes
//! (as a string or a TOML integer). The config keeps the text as written, so that it
//! serialises back unchanged and a bad value reaches validation, whose message names the field
//! and the fix; [`parse_size`] turns it into bytes.
//!
//! The parsing is bytesize's: binary units (`KiB`, `MiB`, `GiB`, `TiB`, also `Ki`, `Mi`, ...)
//! are powers of 1024 and SI units (`KB`, `MB`, `GB`, also `K`, `M`, `G`) powers of 1000, as
//! etcd's and Kubernetes' documentation write them; units ignore case and may follow a space.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A size as written in the config file or the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SizeText(pub String);

impl From<&str> for SizeText {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

impl fmt::Display for SizeText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl Serialize for SizeText {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SizeText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = SizeText;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size such as \"2GiB\", \"512MiB\" or a number of bytes")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<SizeText, E> {
                Ok(SizeText(v.to_owned()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<SizeText, E> {
                Ok(SizeText(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<SizeText, E> {
                Ok(SizeText(v.to_string()))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// Why a size is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeProblem {
    /// Not a number with an optional unit.
    NotASize,
    /// Zero or negative.
    NotPositive,
    /// Beyond what etcd reads (a signed 64-bit number of bytes).
    TooLarge,
}

impl fmt::Display for SizeProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SizeProblem::NotASize => "not a size",
            SizeProblem::NotPositive => "must be more than 0 bytes",
            SizeProblem::TooLarge => "too large",
        })
    }
}

/// The number of bytes `text` stands for.
pub fn parse_size(text: &str) -> Result<u64, SizeProblem> {
    let text = text.trim();
    if let Some(rest) = text.strip_prefix('-') {
        return Err(match parse_size(rest) {
            Err(SizeProblem::NotASize) => SizeProblem::NotASize,
            _ => SizeProblem::NotPositive,
        });
    }
    // bytesize reads a bare number with a fraction ("1.5") as an error and saturates at
    // u64::MAX on overflow; both are caught here.
    let bytes = text
        .parse::<bytesize::ByteSize>()
        .map_err(|_| SizeProblem::NotASize)?
        .as_u64();
    match bytes {
        0 => Err(SizeProblem::NotPositive),
        b if b > i64::MAX as u64 => Err(SizeProblem::TooLarge),
        b => Ok(b),
    }
}

/// `bytes` in the largest binary unit that divides it exactly ("2GiB", "64MiB", "1000B").
pub fn format_size(bytes: u64) -> String {
    const UNITS: [(u64, &str); 5] = [
        (1 << 50, "PiB"),
        (1 << 40, "TiB"),
        (1 << 30, "GiB"),
        (1 << 20, "MiB"),
        (1 << 10, "KiB"),
    ];
    UNITS
        .iter()
        .find(|(factor, _)| bytes >= *factor && bytes.is_multiple_of(*factor))
        .map(|(factor, unit)| format!("{}{unit}", bytes / factor))
        .unwrap_or_else(|| format!("{bytes}B"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_as_etcd_users_write_them() {
        assert_eq!(parse_size("2GiB"), Ok(2 * 1024 * 1024 * 1024));
        assert_eq!(parse_size("8GiB"), Ok(8_589_934_592));
        assert_eq!(parse_size("512MiB"), Ok(512 * 1024 * 1024));
        assert_eq!(parse_size("64MiB"), Ok(67_108_864));
        assert_eq!(parse_size("100MB"), Ok(100_000_000));
        assert_eq!(parse_size("8GB"), Ok(8_000_000_000));
        assert_eq!(parse_size("2147483648"), Ok(2_147_483_648));
        assert_eq!(parse_size("1.5GiB"), Ok(1_610_612_736));
        assert_eq!(parse_size(" 4 gib "), Ok(4 << 30));
        assert_eq!(parse_size("16Ki"), Ok(16 * 1024));
        assert_eq!(parse_size("1K"), Ok(1000));
        assert_eq!(parse_size("9223372036854775807"), Ok(i64::MAX as u64));
    }

    #[test]
    fn bad_sizes() {
        for bad in [
            "",
            "GiB",
            "lots",
            "2 GiBs",
            "1.2.3MiB",
            "0x10",
            "1e9",
            "2GiB extra",
        ] {
            assert_eq!(parse_size(bad), Err(SizeProblem::NotASize), "{bad:?}");
        }
        for bad in ["0", "0GiB", "-1", "-2GiB", "-0", "0.1B"] {
            assert_eq!(parse_size(bad), Err(SizeProblem::NotPositive), "{bad:?}");
        }
        for bad in ["9223372036854775808", "8EiB", "100000EiB"] {
            assert_eq!(parse_size(bad), Err(SizeProblem::TooLarge), "{bad:?}");
        }
    }

    #[test]
    fn formatting() {
        assert_eq!(format_size(2 << 30), "2GiB");
        assert_eq!(format_size(8_589_934_592), "8GiB");
        assert_eq!(format_size(64 << 20), "64MiB");
        assert_eq!(format_size(1536 << 20), "1536MiB");
        assert_eq!(format_size(100_000_000), "100000000B");
        assert_eq!(format_size(1), "1B");
        for b in [1u64, 1000, 1 << 10, 3 << 40, 123_456_789] {
            assert_eq!(parse_size(&format_size(b)), Ok(b));
        }
    }

    #[test]
    fn toml_integers_and_strings() {
        #[derive(Deserialize, Serialize)]
        struct T {
            q: SizeText,
        }
        let t: T = toml::from_str("q = 8589934592").unwrap();
        assert_eq!(t.q, SizeText::from("8589934592"));
        let t: T = toml::from_str("q = -1").unwrap();
        assert_eq!(t.q, SizeText::from("-1"));
        let t: T = toml::from_str("q = \"2GiB\"").unwrap();
        assert_eq!(t.q, SizeText::from("2GiB"));
        assert_eq!(toml::to_string(&t).unwrap().trim(), "q = \"2GiB\"");
        assert!(toml::from_str::<T>("q = true").is_err());
    }
}
