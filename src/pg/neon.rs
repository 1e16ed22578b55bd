//! Neon's transaction pooler: recognising its host names (PgBouncer in transaction mode cannot
//! hold a session-level advisory lock).

use super::conninfo::parse_pairs;

/// For a Neon pooler host (`ep-x-123-pooler.region.aws.neon.tech`), the pooler host and its direct host.
pub fn neon_pooler(url: &str) -> Option<(String, String)> {
    let pairs = parse_pairs(url).ok()?;
    let hosts = pairs.iter().rev().find(|(k, _)| k == "host")?.1.clone();
    pooler_among(hosts.split(','))
}

/// The first Neon pooler host among these host names, and its direct host.
pub(super) fn pooler_among<'a>(
    hosts: impl IntoIterator<Item = &'a str>,
) -> Option<(String, String)> {
    hosts.into_iter().find_map(|host| {
        let lower = host.to_ascii_lowercase();
        let (label, domain) = lower.split_once('.')?;
        let endpoint = label.strip_suffix("-pooler")?;
        if endpoint.len() <= "ep-".len() || !endpoint.starts_with("ep-") {
            return None;
        }
        if !(domain == "neon.tech" || domain.ends_with(".neon.tech")) {
            return None;
        }
        let direct = format!("{}{}", &host[..endpoint.len()], &host[label.len()..]);
        Some((host.to_string(), direct))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neon_pooler_detection() {
        assert_eq!(
            neon_pooler("postgres://u:pw@ep-cool-name-123456-pooler.us-east-2.aws.neon.tech/neondb?sslmode=require"),
            Some((
                "ep-cool-name-123456-pooler.us-east-2.aws.neon.tech".to_string(),
                "ep-cool-name-123456.us-east-2.aws.neon.tech".to_string()
            ))
        );
        assert_eq!(
            neon_pooler("host=ep-a-1-pooler.eu-central-1.aws.neon.tech user=u"),
            Some((
                "ep-a-1-pooler.eu-central-1.aws.neon.tech".to_string(),
                "ep-a-1.eu-central-1.aws.neon.tech".to_string()
            ))
        );
        for not_pooler in [
            "postgres://u@ep-cool-name-123456.us-east-2.aws.neon.tech/db",
            "postgres://u@my-pooler.example.com/db",
            "postgres://u@ep-x-pooler.neon.tech.evil.com/db",
            "postgres://u@ep--pooler.neon.tech/db",
            "host=localhost",
            "",
            "postgres://",
        ] {
            assert_eq!(neon_pooler(not_pooler), None, "{not_pooler}");
        }
    }
}
