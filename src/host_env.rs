//! How MCP hosts hand configuration over in the environment, and which of
//! those values mean "not set".
//!
//! Hosts write every configured variable, filled in or not: Claude Desktop
//! passes an optional MCP Bundle field the user left blank either as an empty
//! string or, when the field has no default, as the literal `${user_config.x}`
//! template; a copied `mcp.json` may still hold `<…>` or `YOUR-TENANT`
//! placeholders. Blank values and untouched host templates count as unset; a
//! value that looks like a placeholder someone forgot to replace stops the
//! server at start-up with the variable named, instead of being sent to BigID
//! as a password or URL.

use std::ffi::{OsStr, OsString};

use clap::CommandFactory as _;
use clap::FromArgMatches as _;

use crate::config::{Cli, ENVIRONMENT};

/// Whether a variable's value is checked for placeholders: the ones a user
/// types into a host's configuration. Proxies and `RUST_LOG` are not ours to
/// judge.
fn is_checked(name: &str) -> bool {
    name.starts_with("BIGID_") || name.starts_with("MCP_") || name == "LOG_FORMAT"
}

/// True when a host-supplied value means "not set": blank, or a host's
/// `${user_config.…}` template that the host left unsubstituted.
pub fn means_unset(value: &str) -> bool {
    let value = value.trim();
    value.is_empty() || (value.starts_with("${user_config.") && value.ends_with('}'))
}

/// Why `value` looks like an unreplaced placeholder, if it does.
///
/// Kept narrow so that real passwords are not refused: `<…>` only when the
/// inside reads like words, `YOUR-…`/`YOUR_…` only in capitals, `${…}` only
/// as a whole value.
pub fn placeholder_kind(value: &str) -> Option<&'static str> {
    let value = value.trim();
    if let Some(inner) = value.strip_prefix('<').and_then(|v| v.strip_suffix('>')) {
        let wordy = inner.chars().any(char::is_alphabetic)
            && inner
                .chars()
                .all(|c| c.is_alphabetic() || " -_.,:;/()'".contains(c));
        if wordy {
            return Some("an <…> placeholder");
        }
    }
    if value.starts_with("${") && value.ends_with('}') && !means_unset(value) {
        return Some("an unexpanded ${…} variable");
    }
    let bytes = value.as_bytes();
    let your = value.match_indices("YOUR").any(|(at, _)| {
        matches!(bytes.get(at + 4), Some(b'-' | b'_'))
            && bytes.get(at + 5).is_some_and(u8::is_ascii_uppercase)
    });
    if your {
        return Some("a YOUR-… placeholder");
    }
    None
}

/// The first checked variable (in `env`) or URL flag holding a placeholder,
/// as `(name, kind)`. Values are never returned: one may be a real secret.
pub fn find_placeholder(
    cli: &Cli,
    env: &impl Fn(&str) -> Option<String>,
) -> Option<(&'static str, &'static str)> {
    let from_env = ENVIRONMENT
        .iter()
        .filter(|n| is_checked(n))
        .find_map(|&name| {
            let value = env(name)?;
            if means_unset(&value) {
                return None;
            }
            placeholder_kind(&value).map(|kind| (name, kind))
        });
    from_env.or_else(|| {
        let flag = |name, value: Option<&str>| value.and_then(placeholder_kind).map(|k| (name, k));
        flag("--bigid-url", cli.bigid_url.as_deref()).or_else(|| {
            flag(
                "--ca-cert",
                cli.ca_cert.as_deref().and_then(std::path::Path::to_str),
            )
        })
    })
}

/// Parses the command line as clap would, except that environment values a
/// host uses for "not set", and placeholders (reported by
/// [`crate::config::Config::from_cli`] with the variable named), do not reach
/// clap: otherwise `BIGID_TIMEOUT=""` fails as "cannot parse float".
pub fn parse_cli() -> Cli {
    let mut command = without_unusable_env(Cli::command(), |name| std::env::var_os(name));
    let matches = command.get_matches_mut();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.format(&mut command).exit())
}

/// `command` with the environment fallback removed from every argument whose
/// variable (looked up through `lookup`) is unset-like or a placeholder, so
/// that clap applies the default instead.
pub fn without_unusable_env(
    command: clap::Command,
    lookup: impl Fn(&OsStr) -> Option<OsString>,
) -> clap::Command {
    command.mut_args(|arg| {
        let unusable = arg.get_env().and_then(&lookup).is_some_and(|value| {
            let value = value.to_string_lossy();
            means_unset(&value) || placeholder_kind(&value).is_some()
        });
        if unusable { arg.env(None) } else { arg }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[test]
    fn blank_values_and_untouched_host_templates_mean_unset() {
        for v in [
            "",
            "  ",
            "${user_config.bigid_password}",
            " ${user_config.x} ",
        ] {
            assert!(means_unset(v), "{v:?}");
        }
        for v in ["x", "${BIGID_PASSWORD}", "${user_config.x"] {
            assert!(!means_unset(v), "{v:?}");
        }
    }

    #[test]
    fn recognises_the_placeholders_of_copied_configurations() {
        for v in [
            "<BigID user token, or leave empty>",
            "<your-password>",
            "<PASSWORD>",
            "https://YOUR-TENANT.bigid.com/api/v1",
            "YOUR_USER_TOKEN",
            "${BIGID_PASSWORD}",
            "${input:bigid-password}",
        ] {
            assert!(placeholder_kind(v).is_some(), "{v:?}");
        }
    }

    #[test]
    fn real_looking_secrets_and_urls_are_not_placeholders() {
        for v in [
            "https://acme.bigid.com/api/v1",
            "<Secr3t!>",
            "p<a>ss",
            "YOURS-truly",
            "your-tenant-is-fine-in-lower-case",
            "eyJhbGciOiJIUzI1NiJ9.e30.abc",
            "a${b}c",
            "${user_config.bigid_url}",
        ] {
            assert_eq!(placeholder_kind(v), None, "{v:?}");
        }
    }

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    #[test]
    fn names_the_variable_holding_a_placeholder_but_not_its_value() {
        let cli = Cli::try_parse_from(["x", "--demo"]).unwrap();
        let env = env_of(&[
            ("BIGID_USERNAME", ""),
            ("BIGID_PASSWORD", "<BigID password, or leave empty>"),
        ]);
        assert_eq!(
            find_placeholder(&cli, &env),
            Some(("BIGID_PASSWORD", "an <…> placeholder"))
        );
        assert_eq!(find_placeholder(&cli, &env_of(&[])), None);
    }

    #[test]
    fn a_placeholder_url_flag_is_named_by_its_flag() {
        let cli = Cli::try_parse_from(["x", "--bigid-url", "https://YOUR-TENANT.bigid.com/api/v1"])
            .unwrap();
        assert_eq!(
            find_placeholder(&cli, &env_of(&[])).map(|(name, _)| name),
            Some("--bigid-url")
        );
    }

    #[test]
    fn unusable_environment_values_leave_clap_to_its_defaults() {
        let lookup = |name: &OsStr| match name.to_str() {
            Some("BIGID_TIMEOUT") => Some(OsString::from("")),
            Some("BIGID_AUTH_SCHEME") => Some(OsString::from("${user_config.scheme}")),
            Some("LOG_FORMAT") => Some(OsString::from("<text or json>")),
            Some("BIGID_REFRESH_METHOD") => Some(OsString::from("post")),
            _ => None,
        };
        let command = without_unusable_env(Cli::command(), lookup);
        let env_of_arg = |id: &str| {
            command
                .get_arguments()
                .find(|a| a.get_id() == id)
                .and_then(|a| a.get_env())
                .map(|e| e.to_owned())
        };
        assert_eq!(env_of_arg("timeout"), None);
        assert_eq!(env_of_arg("auth_scheme"), None);
        assert_eq!(env_of_arg("log_format"), None);
        assert_eq!(
            env_of_arg("refresh_method"),
            Some(OsString::from("BIGID_REFRESH_METHOD"))
        );
    }
}
