//! Reading a certificate chain and its key from PEM files, with every
//! failure as one line that names the file and what is wrong with it.
//!
//! Checked before anything is served: the files are readable and hold PEM
//! sections of the right kind, the key parses and matches the leaf
//! certificate's public key, and the leaf is valid now (its `notBefore`
//! and `notAfter`, read from the DER here: rustls does not expose them).

use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use crate::config::TlsFiles;

/// The chain and key of `files`, checked; `Err` is one line for an operator.
pub(crate) fn load(
    files: &TlsFiles,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, String> {
    let cert_path = files.cert.display();
    let key_path = files.key.display();
    let cert_pem = read(&files.cert, "--tls-cert")?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("--tls-cert {cert_path}: not a PEM certificate file: {e}"))?;
    let Some(leaf) = chain.first() else {
        return Err(format!(
            "--tls-cert {cert_path}: holds no certificate (no `BEGIN CERTIFICATE` section)"
        ));
    };
    let (not_before, not_after) = validity(leaf).ok_or_else(|| {
        format!("--tls-cert {cert_path}: the first certificate is not a valid X.509 certificate")
    })?;
    let now = unix_now();
    if now > not_after.unix {
        return Err(format!(
            "--tls-cert {cert_path}: the certificate expired on {}",
            not_after.text
        ));
    }
    if now < not_before.unix {
        return Err(format!(
            "--tls-cert {cert_path}: the certificate is not valid before {}",
            not_before.text
        ));
    }
    let key_pem = read(&files.key, "--tls-key")?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
        pem::Error::NoItemsFound => format!(
            "--tls-key {key_path}: holds no private key (no `BEGIN PRIVATE KEY`, `BEGIN RSA PRIVATE KEY` or `BEGIN EC PRIVATE KEY` section)"
        ),
        other => format!("--tls-key {key_path}: not a PEM private key file: {other}"),
    })?;
    CertifiedKey::from_der(chain, key, provider)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => format!(
                "--tls-key {key_path}: the key does not match the certificate in {cert_path}"
            ),
            rustls::Error::InvalidCertificate(why) => {
                format!("--tls-cert {cert_path}: cannot use the certificate: {why}")
            }
            other => format!("--tls-key {key_path}: cannot use the private key: {other}"),
        })
        .map(Arc::new)
}

fn read(path: &Path, flag: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{flag} {}: cannot read the file: {e}", path.display()))
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// A certificate's `notBefore` or `notAfter`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Time {
    pub(crate) unix: i64,
    /// As `YYYY-MM-DD HH:MM:SS UTC`.
    pub(crate) text: String,
}

/// The leaf's validity period: `Certificate ::= SEQUENCE { tbsCertificate
/// SEQUENCE { [0] version OPTIONAL, serialNumber, signature, issuer,
/// validity SEQUENCE { notBefore, notAfter }, ... }, ... }` (RFC 5280).
pub(crate) fn validity(cert: &[u8]) -> Option<(Time, Time)> {
    let (0x30, cert, _) = tlv(cert)? else {
        return None;
    };
    let (0x30, tbs, _) = tlv(cert)? else {
        return None;
    };
    let (tag, _, mut rest) = tlv(tbs)?;
    if tag == 0xa0 {
        // The version; the serial number follows.
        rest = tlv(rest)?.2;
    }
    // The signature algorithm, then the issuer.
    rest = tlv(rest)?.2;
    rest = tlv(rest)?.2;
    let (0x30, validity, _) = tlv(rest)? else {
        return None;
    };
    let (before_tag, before, rest) = tlv(validity)?;
    let (after_tag, after, _) = tlv(rest)?;
    Some((time(before_tag, before)?, time(after_tag, after)?))
}

/// One DER element: its tag, its contents and what follows it.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let (bytes, rest) = rest.split_at_checked(n)?;
        let len = bytes
            .iter()
            .fold(0usize, |len, &b| (len << 8) | usize::from(b));
        (len, rest)
    };
    let (contents, rest) = rest.split_at_checked(len)?;
    Some((tag, contents, rest))
}

/// `UTCTime` (`YYMMDDHHMMSSZ`) or `GeneralizedTime` (`YYYYMMDDHHMMSSZ`).
fn time(tag: u8, text: &[u8]) -> Option<Time> {
    let digits = |s: &[u8]| -> Option<i64> {
        s.iter().try_fold(0i64, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + i64::from(c - b'0'))
        })
    };
    let (year, rest) = match (tag, text.len()) {
        (0x17, 13) => {
            let yy = digits(&text[..2])?;
            // RFC 5280: 50..99 are 19xx, 00..49 are 20xx.
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &text[2..])
        }
        (0x18, 15) => (digits(&text[..4])?, &text[4..]),
        _ => return None,
    };
    if rest.last() != Some(&b'Z') {
        return None;
    }
    let field = |at: usize| digits(&rest[at..at + 2]);
    let (month, day, hour, minute, second) =
        (field(0)?, field(2)?, field(4)?, field(6)?, field(8)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let unix = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
    Some(Time {
        unix,
        text: format!("{year:04}-{month:02}-{day:02} {hour:02}:{minute:02}:{second:02} UTC"),
    })
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_both_encodings() {
        let utc = time(0x17, b"240229123456Z").expect("UTCTime");
        assert_eq!(utc.text, "2024-02-29 12:34:56 UTC");
        assert_eq!(utc.unix, 1_709_210_096);
        let old = time(0x17, b"991231235959Z").expect("UTCTime");
        assert_eq!(old.text, "1999-12-31 23:59:59 UTC");
        let generalized = time(0x18, b"20500101000000Z").expect("GeneralizedTime");
        assert_eq!(generalized.unix, 2_524_608_000);
        assert_eq!(time(0x17, b"2402291234Z"), None);
        assert_eq!(time(0x17, b"241329123456Z"), None);
        assert_eq!(time(0x18, b"2050010100000+"), None);
        assert_eq!(time(0x04, b"240229123456Z"), None);
    }

    #[test]
    fn the_epoch_is_day_zero() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
    }

    #[test]
    fn truncated_der_is_refused() {
        assert!(validity(&[]).is_none());
        assert!(validity(&[0x30, 0x82, 0xff]).is_none());
        assert!(validity(&[0x30, 0x03, 0x30, 0x01, 0x02]).is_none());
        assert!(tlv(&[0x02, 0x85, 1, 1, 1, 1, 1]).is_none());
    }
}
