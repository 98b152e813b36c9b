//! Extended resource names, checked the way the kubelet checks them at registration, and the
//! plugin socket file name derived from each.

use std::fmt;

use crate::config::DEFAULT_RESOURCE_NAME;

/// Socket file name of the default resource, the name the original Go tun-manager used.
pub const DEFAULT_SOCKET_NAME: &str = "tun.sock";
/// Maximum length of the name part after the `/` (a Kubernetes qualified name).
const MAX_NAME_PART: usize = 63;
/// Maximum length of the domain prefix (a DNS-1123 subdomain).
const MAX_DOMAIN: usize = 253;
/// The kubelet validates `requests.` + name as a qualified name, so the prefix counts towards
/// the domain limit.
const REQUESTS_PREFIX: &str = "requests.";

/// A resource name the kubelet accepts as an extended resource, such as `squat.ai/tun`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ResourceName {
    name: String,
}

/// Violation of the kubelet's rules for extended resource names.
#[derive(Debug, PartialEq, Eq)]
pub enum ResourceNameError {
    /// No `/` separates the domain from the name.
    MissingDomain,
    /// The domain is under `kubernetes.io/`, which Kubernetes reserves for native resources, or
    /// starts with `requests.`, which quota names use.
    ReservedDomain,
    /// The domain is not a lowercase DNS-1123 subdomain or is too long.
    InvalidDomain(String),
    /// The part after `/` is not a qualified name of at most 63 characters.
    InvalidName(String),
}

impl fmt::Display for ResourceNameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingDomain => write!(f, "a resource name needs a domain, as in domain/name"),
            Self::ReservedDomain => write!(
                f,
                "names under kubernetes.io/ and names starting with requests. are reserved"
            ),
            Self::InvalidDomain(domain) => write!(
                f,
                "domain {domain:?} is not a lowercase DNS subdomain of at most {} characters",
                MAX_DOMAIN - REQUESTS_PREFIX.len()
            ),
            Self::InvalidName(name) => write!(
                f,
                "name {name:?} must be 1 to {MAX_NAME_PART} letters, digits, '-', '_' or '.', \
                 starting and ending with a letter or digit"
            ),
        }
    }
}

impl std::error::Error for ResourceNameError {}

impl ResourceName {
    /// Parses `value` with the kubelet's rules for extended resource names.
    pub fn parse(value: &str) -> Result<ResourceName, ResourceNameError> {
        let Some((domain, name)) = value.split_once('/') else {
            return Err(ResourceNameError::MissingDomain);
        };
        if value.contains("kubernetes.io/") || value.starts_with(REQUESTS_PREFIX) {
            return Err(ResourceNameError::ReservedDomain);
        }
        if !is_dns_subdomain(domain) || REQUESTS_PREFIX.len() + domain.len() > MAX_DOMAIN {
            return Err(ResourceNameError::InvalidDomain(domain.to_owned()));
        }
        if !is_qualified_name_part(name) {
            return Err(ResourceNameError::InvalidName(name.to_owned()));
        }
        Ok(ResourceName {
            name: value.to_owned(),
        })
    }

    /// Returns the name as registered with the kubelet.
    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// Returns the socket file name served for this resource in the plugin directory.
    ///
    /// The default resource keeps `tun.sock`. Any other name becomes `<domain>_<name>.sock`,
    /// for example `squat.ai_tun.sock`; domains contain no `_`, so two resource names never
    /// share a socket file.
    pub fn socket_name(&self) -> String {
        if self.name == DEFAULT_RESOURCE_NAME {
            return DEFAULT_SOCKET_NAME.to_owned();
        }
        format!("{}.sock", self.name.replacen('/', "_", 1))
    }
}

impl fmt::Display for ResourceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// Checks a DNS-1123 subdomain: dot-separated labels of lowercase letters, digits and `-`,
/// each starting and ending with a letter or digit.
fn is_dns_subdomain(domain: &str) -> bool {
    !domain.is_empty()
        && domain.split('.').all(|label| {
            let bytes = label.as_bytes();
            !bytes.is_empty()
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
                && bytes[0] != b'-'
                && bytes[bytes.len() - 1] != b'-'
        })
}

/// Checks the name part of a Kubernetes qualified name: `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`,
/// at most 63 characters.
fn is_qualified_name_part(name: &str) -> bool {
    let bytes = name.as_bytes();
    let is_edge = |b: &u8| b.is_ascii_alphanumeric();
    !bytes.is_empty()
        && bytes.len() <= MAX_NAME_PART
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && is_edge(&bytes[0])
        && is_edge(&bytes[bytes.len() - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_in_use_are_accepted() {
        for name in [
            "devices.anza-labs.dev/tun",
            "squat.ai/tun",
            "devic.es/tun",
            "smarter-devices/net_tun",
            "devices.kubevirt.io/tun",
        ] {
            assert!(ResourceName::parse(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn kubelet_rejections_are_rejected() {
        let cases = [
            ("tun", ResourceNameError::MissingDomain),
            ("kubernetes.io/tun", ResourceNameError::ReservedDomain),
            ("node.kubernetes.io/tun", ResourceNameError::ReservedDomain),
            ("requests.squat.ai/tun", ResourceNameError::ReservedDomain),
            (
                "Squat.ai/tun",
                ResourceNameError::InvalidDomain("Squat.ai".into()),
            ),
            ("/tun", ResourceNameError::InvalidDomain(String::new())),
            (
                "-squat.ai/tun",
                ResourceNameError::InvalidDomain("-squat.ai".into()),
            ),
            (
                "squat..ai/tun",
                ResourceNameError::InvalidDomain("squat..ai".into()),
            ),
            ("squat.ai/", ResourceNameError::InvalidName(String::new())),
            (
                "squat.ai/tun/x",
                ResourceNameError::InvalidName("tun/x".into()),
            ),
            (
                "squat.ai/-tun",
                ResourceNameError::InvalidName("-tun".into()),
            ),
            (
                "squat.ai/tun!",
                ResourceNameError::InvalidName("tun!".into()),
            ),
        ];
        for (value, expected) in cases {
            assert_eq!(ResourceName::parse(value), Err(expected), "{value}");
        }
    }

    #[test]
    fn name_part_length_limit() {
        let ok = format!("squat.ai/{}", "t".repeat(63));
        let too_long = format!("squat.ai/{}", "t".repeat(64));
        assert!(ResourceName::parse(&ok).is_ok());
        assert!(ResourceName::parse(&too_long).is_err());
    }

    #[test]
    fn domain_length_limit() {
        let label = "a".repeat(61);
        let domain = [label.as_str(); 4].join("."); // 247 characters
        assert!(ResourceName::parse(&format!("{}/tun", &domain[..244])).is_ok());
        assert!(ResourceName::parse(&format!("{domain}/tun")).is_err());
    }

    #[test]
    fn socket_names() {
        let socket = |name: &str| ResourceName::parse(name).expect("valid").socket_name();
        assert_eq!(socket("devices.anza-labs.dev/tun"), "tun.sock");
        assert_eq!(socket("squat.ai/tun"), "squat.ai_tun.sock");
        assert_eq!(
            socket("smarter-devices/net_tun"),
            "smarter-devices_net_tun.sock"
        );
        assert_eq!(
            socket("devices.kubevirt.io/tun"),
            "devices.kubevirt.io_tun.sock"
        );
    }
}
