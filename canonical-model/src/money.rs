//! Exact money: a decimal amount and an ISO 4217 currency whose minor units
//! are known. An amount with more decimals than its currency allows, or an
//! unknown currency code, is a data error naming what is wrong, never a
//! rounding.
//!
//! ```
//! use canonical_model::{Currency, Money};
//! let m = Money::parse("1234.50", "usd").unwrap();
//! assert_eq!((m.amount.to_string().as_str(), m.currency.code()), ("1234.50", "USD"));
//! assert!(Money::parse("1.5", "JPY").is_err()); // the yen has no minor unit
//! assert_eq!(Currency::parse("KWD").unwrap().minor_units(), 3);
//! ```

use rust_decimal::Decimal;
use std::fmt;

/// ISO 4217 codes and their minor units: the active list, plus codes
/// withdrawn recently enough to appear in ledgers still being synced
/// (HRK, SLL, ZWL, CUC, ANG). Funds and precious metals without minor units
/// (XAU, XDR, …) are not currencies of a ledger amount and are refused.
const CURRENCIES: &[(&str, u8)] = &[
    ("AED", 2),
    ("AFN", 2),
    ("ALL", 2),
    ("AMD", 2),
    ("ANG", 2),
    ("AOA", 2),
    ("ARS", 2),
    ("AUD", 2),
    ("AWG", 2),
    ("AZN", 2),
    ("BAM", 2),
    ("BBD", 2),
    ("BDT", 2),
    ("BGN", 2),
    ("BHD", 3),
    ("BIF", 0),
    ("BMD", 2),
    ("BND", 2),
    ("BOB", 2),
    ("BOV", 2),
    ("BRL", 2),
    ("BSD", 2),
    ("BTN", 2),
    ("BWP", 2),
    ("BYN", 2),
    ("BZD", 2),
    ("CAD", 2),
    ("CDF", 2),
    ("CHE", 2),
    ("CHF", 2),
    ("CHW", 2),
    ("CLF", 4),
    ("CLP", 0),
    ("CNY", 2),
    ("COP", 2),
    ("COU", 2),
    ("CRC", 2),
    ("CUC", 2),
    ("CUP", 2),
    ("CVE", 2),
    ("CZK", 2),
    ("DJF", 0),
    ("DKK", 2),
    ("DOP", 2),
    ("DZD", 2),
    ("EGP", 2),
    ("ERN", 2),
    ("ETB", 2),
    ("EUR", 2),
    ("FJD", 2),
    ("FKP", 2),
    ("GBP", 2),
    ("GEL", 2),
    ("GHS", 2),
    ("GIP", 2),
    ("GMD", 2),
    ("GNF", 0),
    ("GTQ", 2),
    ("GYD", 2),
    ("HKD", 2),
    ("HNL", 2),
    ("HRK", 2),
    ("HTG", 2),
    ("HUF", 2),
    ("IDR", 2),
    ("ILS", 2),
    ("INR", 2),
    ("IQD", 3),
    ("IRR", 2),
    ("ISK", 0),
    ("JMD", 2),
    ("JOD", 3),
    ("JPY", 0),
    ("KES", 2),
    ("KGS", 2),
    ("KHR", 2),
    ("KMF", 0),
    ("KPW", 2),
    ("KRW", 0),
    ("KWD", 3),
    ("KYD", 2),
    ("KZT", 2),
    ("LAK", 2),
    ("LBP", 2),
    ("LKR", 2),
    ("LRD", 2),
    ("LSL", 2),
    ("LYD", 3),
    ("MAD", 2),
    ("MDL", 2),
    ("MGA", 2),
    ("MKD", 2),
    ("MMK", 2),
    ("MNT", 2),
    ("MOP", 2),
    ("MRU", 2),
    ("MUR", 2),
    ("MVR", 2),
    ("MWK", 2),
    ("MXN", 2),
    ("MXV", 2),
    ("MYR", 2),
    ("MZN", 2),
    ("NAD", 2),
    ("NGN", 2),
    ("NIO", 2),
    ("NOK", 2),
    ("NPR", 2),
    ("NZD", 2),
    ("OMR", 3),
    ("PAB", 2),
    ("PEN", 2),
    ("PGK", 2),
    ("PHP", 2),
    ("PKR", 2),
    ("PLN", 2),
    ("PYG", 0),
    ("QAR", 2),
    ("RON", 2),
    ("RSD", 2),
    ("RUB", 2),
    ("RWF", 0),
    ("SAR", 2),
    ("SBD", 2),
    ("SCR", 2),
    ("SDG", 2),
    ("SEK", 2),
    ("SGD", 2),
    ("SHP", 2),
    ("SLE", 2),
    ("SLL", 2),
    ("SOS", 2),
    ("SRD", 2),
    ("SSP", 2),
    ("STN", 2),
    ("SVC", 2),
    ("SYP", 2),
    ("SZL", 2),
    ("THB", 2),
    ("TJS", 2),
    ("TMT", 2),
    ("TND", 3),
    ("TOP", 2),
    ("TRY", 2),
    ("TTD", 2),
    ("TWD", 2),
    ("TZS", 2),
    ("UAH", 2),
    ("UGX", 0),
    ("USD", 2),
    ("USN", 2),
    ("UYI", 0),
    ("UYU", 2),
    ("UYW", 4),
    ("UZS", 2),
    ("VED", 2),
    ("VES", 2),
    ("VND", 0),
    ("VUV", 0),
    ("WST", 2),
    ("XAF", 0),
    ("XCD", 2),
    ("XCG", 2),
    ("XOF", 0),
    ("XPF", 0),
    ("YER", 2),
    ("ZAR", 2),
    ("ZMW", 2),
    ("ZWG", 2),
    ("ZWL", 2),
];

/// An ISO 4217 currency with known minor units.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Currency {
    code: &'static str,
    minor_units: u8,
}

impl Currency {
    /// The currency of a code (case and surrounding blanks ignored).
    pub fn parse(code: &str) -> Result<Self, MoneyError> {
        let c = code.trim().to_ascii_uppercase();
        CURRENCIES
            .iter()
            .find(|(k, _)| *k == c)
            .map(|(k, m)| Currency {
                code: k,
                minor_units: *m,
            })
            .ok_or_else(|| MoneyError::UnknownCurrency(code.chars().take(12).collect()))
    }
    pub fn code(&self) -> &'static str {
        self.code
    }
    /// Decimal places of the currency's minor unit (JPY 0, USD 2, KWD 3).
    pub fn minor_units(&self) -> u8 {
        self.minor_units
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code)
    }
}

/// An exact amount in a currency, signed (+ debit, − credit in a ledger).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Money {
    pub amount: Decimal,
    pub currency: Currency,
}

/// Why a value is not money.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("unknown ISO 4217 currency code {0:?}")]
    UnknownCurrency(String),
    #[error("{amount} {currency} has more decimals than the currency's {minor_units}")]
    TooPrecise {
        amount: String,
        currency: &'static str,
        minor_units: u8,
    },
    #[error("{0:?} is not an exact decimal amount")]
    NotAnAmount(String),
}

impl Money {
    /// Money from an exact decimal: refused when it has more (significant)
    /// decimals than the currency's minor unit. Trailing zeros are fine
    /// (`100.00 JPY` is 100 yen); the amount keeps the currency's scale.
    pub fn new(amount: Decimal, currency: Currency) -> Result<Self, MoneyError> {
        let minor = u32::from(currency.minor_units);
        let normal = amount.normalize();
        if normal.scale() > minor {
            return Err(MoneyError::TooPrecise {
                amount: amount.to_string(),
                currency: currency.code,
                minor_units: currency.minor_units,
            });
        }
        let mut a = normal;
        a.rescale(minor);
        // At the edge of the decimal's range the minor-unit scale may not fit.
        if a.scale() != minor {
            return Err(MoneyError::NotAnAmount(amount.to_string()));
        }
        Ok(Self {
            amount: a,
            currency,
        })
    }

    /// Money from the text of an amount (no float on the way) and a code.
    pub fn parse(amount: &str, currency: &str) -> Result<Self, MoneyError> {
        let currency = Currency::parse(currency)?;
        let a = amount.trim();
        // Digits, one point and a leading sign only (no `1_000`, no exponent).
        let plain = a.strip_prefix(['-', '+']).unwrap_or(a);
        if plain.is_empty() || !plain.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return Err(MoneyError::NotAnAmount(a.chars().take(40).collect()));
        }
        let d = Decimal::from_str_exact(a)
            .map_err(|_| MoneyError::NotAnAmount(a.chars().take(40).collect()))?;
        Self::new(d, currency)
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.amount, self.currency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minor_units_decide_what_is_exact() {
        assert_eq!(
            Money::parse("100.00", "JPY").unwrap().amount.to_string(),
            "100"
        );
        assert!(matches!(
            Money::parse("0.5", "JPY"),
            Err(MoneyError::TooPrecise { minor_units: 0, .. })
        ));
        assert_eq!(
            Money::parse("-1.234", "KWD").unwrap().to_string(),
            "-1.234 KWD"
        );
        assert!(Money::parse("1.2345", "KWD").is_err());
        assert_eq!(Money::parse("7", "eur").unwrap().to_string(), "7.00 EUR");
        assert_eq!(Money::parse("0.1234", "CLF").unwrap().amount.scale(), 4);
    }

    #[test]
    fn unknown_codes_and_non_amounts_are_named() {
        assert_eq!(
            Currency::parse("XYZ").unwrap_err().to_string(),
            "unknown ISO 4217 currency code \"XYZ\""
        );
        assert!(
            Currency::parse("XAU").is_err(),
            "gold is not a ledger currency"
        );
        assert!(matches!(
            Money::parse("1e3", "USD"),
            Err(MoneyError::NotAnAmount(_))
        ));
        assert!(Money::parse("12,50", "EUR").is_err());
        // Huge but exact amounts are kept exactly; one whose cents cannot be
        // held is refused, not rescaled.
        let big = Money::parse("79228162514264337593543950.33", "USD").unwrap();
        assert_eq!(big.amount.to_string(), "79228162514264337593543950.33");
        assert!(Money::parse("79228162514264337593543950335", "USD").is_err());
        assert!(Money::parse("1_000", "USD").is_err());
        assert_eq!(
            Money::parse("-0.00", "USD").unwrap().to_string(),
            "0.00 USD"
        );
    }

    #[test]
    fn the_table_has_each_code_once_and_sorted() {
        for w in CURRENCIES.windows(2) {
            assert!(w[0].0 < w[1].0, "{} then {}", w[0].0, w[1].0);
        }
        assert!(CURRENCIES.iter().all(|(c, m)| c.len() == 3 && *m <= 4));
    }
}
