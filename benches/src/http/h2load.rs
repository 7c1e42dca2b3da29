//! Reading the report of `h2load` (Debian's `nghttp2-client`), the HTTP/2
//! load generator of the TLS bench.

/// What one h2load run reported.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Requests that succeeded.
    pub succeeded: u64,
    /// Requests per second over the measured window.
    pub rate: f64,
    /// The protocol spoken (`h2`, `h2c`, `http/1.1`): h2load falls back to
    /// HTTP/1.1 when ALPN does not settle on `h2`.
    pub protocol: String,
}

/// Reads h2load's report: `finished in 4.00s, 123456.78 req/s, ...`,
/// `requests: N total, N started, N done, N succeeded, ...` and
/// `Application protocol: h2`.
pub fn parse(text: &str) -> Option<Report> {
    let rate = text.lines().find_map(|line| {
        let rest = line.strip_prefix("finished in ")?;
        let (_, after) = rest.split_once(", ")?;
        after.split_whitespace().next()?.parse::<f64>().ok()
    })?;
    let succeeded = text.lines().find_map(|line| {
        let rest = line.strip_prefix("requests: ")?;
        rest.split(", ")
            .find_map(|part| part.strip_suffix(" succeeded"))?
            .parse::<u64>()
            .ok()
    })?;
    let protocol = text.lines().find_map(|line| {
        let rest = line.strip_prefix("Application protocol:")?;
        Some(rest.trim().to_owned())
    })?;
    Some(Report {
        succeeded,
        rate,
        protocol,
    })
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn reads_the_report() {
        let report = "starting benchmark...\n\
            finished in 4.00s, 81234.50 req/s, 2.71MB/s\n\
            requests: 324938 total, 325338 started, 324938 done, 324900 succeeded, 38 failed\n\
            Application protocol: h2\n";
        let report = parse(report).expect("a report");
        assert_eq!(report.succeeded, 324_900);
        assert_eq!(report.rate, 81_234.5);
        assert_eq!(report.protocol, "h2");
        assert_eq!(parse("nothing"), None);
    }
}
