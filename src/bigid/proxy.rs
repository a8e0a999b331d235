//! Which proxy a request goes through, described without its credentials.

use reqwest::Url;

/// The proxy a request to `url` goes through, as reqwest picks it from the
/// environment; for messages, so it never holds the proxy's credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proxied {
    /// The variable that set it, e.g. `HTTPS_PROXY`.
    pub var: String,
    /// `scheme://host:port` of the proxy.
    pub address: String,
}

/// Which proxy, if any, reqwest uses for `url` given these environment
/// variables: `HTTPS_PROXY`/`HTTP_PROXY`, then `ALL_PROXY` (either case),
/// minus `NO_PROXY` and loopback hosts. `None` also when `NO_PROXY` has
/// CIDR ranges and the host is an address (reqwest may exempt it).
pub fn proxy_for(url: &Url, env: impl Fn(&str) -> Option<String>) -> Option<Proxied> {
    if is_loopback(url) {
        return None;
    }
    let host = url
        .host_str()?
        .trim_start_matches('[')
        .trim_end_matches(']');
    let host = host.to_ascii_lowercase();
    let no_proxy = env("NO_PROXY")
        .or_else(|| env("no_proxy"))
        .unwrap_or_default();
    let exempt = no_proxy
        .split(',')
        .map(|e| e.trim().trim_start_matches('.').to_ascii_lowercase())
        .filter(|e| !e.is_empty())
        .any(|entry| {
            entry == "*"
                || entry == host
                || host.ends_with(&format!(".{entry}"))
                || (entry.contains('/') && host.parse::<std::net::IpAddr>().is_ok())
        });
    if exempt {
        return None;
    }
    let names: &[&str] = match url.scheme() {
        "https" => &["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"],
        _ => &["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"],
    };
    names.iter().find_map(|name| {
        let value = env(name)?;
        let value = value.trim();
        if value.is_empty() {
            return None;
        }
        // Like reqwest, read `host:port` as an http:// proxy.
        let full = match value.contains("://") {
            true => value.to_owned(),
            false => format!("http://{value}"),
        };
        let address = match Url::parse(&full) {
            Ok(proxy) => format!(
                "{}://{}{}",
                proxy.scheme(),
                proxy.host_str().unwrap_or("?"),
                proxy.port().map(|p| format!(":{p}")).unwrap_or_default()
            ),
            Err(_) => "(unparsable)".to_owned(),
        };
        Some(Proxied {
            var: (*name).to_owned(),
            address,
        })
    })
}

/// True for `localhost` and loopback addresses: never sent through a proxy.
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_ipv4_loopback_counts_as_loopback() {
        let mapped = Url::parse("http://[::ffff:127.0.0.1]:9/api/v1").unwrap();
        assert!(is_loopback(&mapped));
        let public = Url::parse("http://[::ffff:192.0.2.1]:9/api/v1").unwrap();
        assert!(!is_loopback(&public));
    }

    #[test]
    fn proxy_for_follows_the_variables_without_showing_credentials() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        let https = Url::parse("https://t.bigid.com/api/v1").unwrap();
        let http = Url::parse("http://t.bigid.com/api/v1").unwrap();
        let with_auth = env(&[("https_proxy", "http://bob:hunter2@proxy.corp:3128")]);
        assert_eq!(
            proxy_for(&https, with_auth),
            Some(Proxied {
                var: "https_proxy".into(),
                address: "http://proxy.corp:3128".into()
            })
        );
        let bare = env(&[("ALL_PROXY", "bob:hunter2@proxy:3128")]);
        assert_eq!(proxy_for(&http, bare).unwrap().address, "http://proxy:3128");
        assert_eq!(
            proxy_for(&http, env(&[("HTTPS_PROXY", "http://p:1")])),
            None
        );
        let loopback = Url::parse("http://127.0.0.1:9/api/v1").unwrap();
        assert_eq!(
            proxy_for(&loopback, env(&[("HTTP_PROXY", "http://p:1")])),
            None
        );
        for no_proxy in ["bigid.com", ".bigid.com", "x, t.bigid.com", "*"] {
            let vars: &'static [(&str, &str)] = Box::leak(Box::new([
                ("HTTPS_PROXY", "http://p:1"),
                ("NO_PROXY", no_proxy),
            ]));
            assert_eq!(proxy_for(&https, env(vars)), None, "{no_proxy}");
        }
        let other = env(&[("HTTPS_PROXY", "http://p:1"), ("NO_PROXY", "notbigid.com")]);
        assert!(proxy_for(&https, other).is_some());
    }
}
