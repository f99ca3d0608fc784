//! Kubernetes resource quantities (`64Mi`, `500m`, `1.5G`, `2e3`), parsed into
//! the integers the kernel wants: bytes for memory, millicores for CPU.

use thiserror::Error;

/// Why a string is not a usable quantity.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum QuantityError {
    /// Not in Kubernetes quantity notation.
    #[error("{0:?} is not a quantity")]
    Syntax(String),
    /// Negative, or too large for the kernel.
    #[error("{0:?} is out of range")]
    Range(String),
}

/// Parse a quantity into an exact number of `unit`-ths: `to_scaled("500m", 1000)`
/// is 500 (millicores), `to_scaled("64Mi", 1)` is 67108864 bytes. Fractions of
/// the smallest unit round up, as the kubelet does.
pub fn to_scaled(input: &str, per_unit: u128) -> Result<u64, QuantityError> {
    let syntax = || QuantityError::Syntax(input.to_string());
    let s = input.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let (numer, denom) = parse_decimal(number).ok_or_else(syntax)?;
    let (mul, div) = suffix_factor(suffix).ok_or_else(syntax)?;
    let numer = numer
        .checked_mul(mul)
        .and_then(|n| n.checked_mul(per_unit))
        .ok_or_else(|| QuantityError::Range(input.to_string()))?;
    let denom = denom.checked_mul(div).ok_or_else(syntax)?;
    let value = numer.div_ceil(denom);
    u64::try_from(value)
        .ok()
        .filter(|v| *v <= i64::MAX as u64)
        .ok_or_else(|| QuantityError::Range(input.to_string()))
}

/// Bytes in a memory quantity.
pub fn bytes(input: &str) -> Result<u64, QuantityError> {
    to_scaled(input, 1)
}

/// Millicores in a CPU quantity.
pub fn millicores(input: &str) -> Result<u64, QuantityError> {
    to_scaled(input, 1000)
}

/// A non-negative decimal as numerator/denominator.
fn parse_decimal(s: &str) -> Option<(u128, u128)> {
    let s = s.strip_prefix('+').unwrap_or(s);
    if s.is_empty() || s.starts_with('-') {
        return None;
    }
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if int.is_empty() && frac.is_empty() || frac.len() > 18 {
        return None;
    }
    let digits = |d: &str| d.chars().all(|c| c.is_ascii_digit());
    if !digits(int) || !digits(frac) {
        return None;
    }
    let int: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let denom = 10u128.pow(frac.len() as u32);
    let frac: u128 = if frac.is_empty() {
        0
    } else {
        frac.parse().ok()?
    };
    Some((int.checked_mul(denom)?.checked_add(frac)?, denom))
}

/// Multiplier and divisor of a suffix: binary SI, decimal SI or `e<N>`.
fn suffix_factor(suffix: &str) -> Option<(u128, u128)> {
    let binary = |p: u32| Some((1u128 << (10 * p), 1));
    let decimal = |p: u32| Some((10u128.pow(p), 1));
    match suffix {
        "" => Some((1, 1)),
        "Ki" => binary(1),
        "Mi" => binary(2),
        "Gi" => binary(3),
        "Ti" => binary(4),
        "Pi" => binary(5),
        "Ei" => binary(6),
        "n" => Some((1, 1_000_000_000)),
        "u" => Some((1, 1_000_000)),
        "m" => Some((1, 1000)),
        "k" => decimal(3),
        "M" => decimal(6),
        "G" => decimal(9),
        "T" => decimal(12),
        "P" => decimal(15),
        "E" => decimal(18),
        _ => {
            let exp = suffix.strip_prefix(['e', 'E'])?;
            let exp: u32 = exp.parse().ok().filter(|e| *e <= 18)?;
            decimal(exp)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_suffixes() {
        assert_eq!(bytes("64Mi"), Ok(64 << 20));
        assert_eq!(bytes("1Gi"), Ok(1 << 30));
        assert_eq!(bytes("1G"), Ok(1_000_000_000));
        assert_eq!(bytes("128974848"), Ok(128974848));
        assert_eq!(bytes("129e6"), Ok(129_000_000));
        assert_eq!(bytes("1.5Ki"), Ok(1536));
        assert_eq!(bytes("100m"), Ok(1), "fractions of a byte round up");
    }

    #[test]
    fn cpu_millicores() {
        assert_eq!(millicores("500m"), Ok(500));
        assert_eq!(millicores("2"), Ok(2000));
        assert_eq!(millicores("0.25"), Ok(250));
        assert_eq!(millicores("1.5"), Ok(1500));
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "", "64Q", "-1", "Mi", "1.2.3", "1e99", "one", "1 Mi", ".", "1e",
        ] {
            assert!(bytes(bad).is_err(), "{bad:?} should be rejected");
        }
        assert_eq!(bytes("64Q"), Err(QuantityError::Syntax("64Q".into())));
        assert_eq!(bytes("100Ei"), Err(QuantityError::Range("100Ei".into())));
    }
}
