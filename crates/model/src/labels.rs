//! Names and labels: the Kubernetes rules Calico applies to resource names
//! (DNS-1123 subdomains), label keys (optional DNS prefix + `/` + name) and
//! label values (63 characters of `[A-Za-z0-9._-]`, alphanumeric at the ends).

use std::collections::BTreeMap;

use crate::error::{Problems, join_path};

/// Checks a resource name: lower-case alphanumerics, `-` and `.`, starting
/// and ending with an alphanumeric, at most 253 characters.
pub fn check_resource_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("name must be set".into());
    }
    if name.len() > 253 {
        return Err(format!(
            "name is too long ({} > 253 characters)",
            name.len()
        ));
    }
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.';
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !name.chars().all(ok_char) || !alnum(name.chars().next()) || !alnum(name.chars().last()) {
        return Err(format!(
            "invalid name \"{name}\": use lower-case letters, digits, '-' and '.', starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

fn is_label_name(s: &str) -> bool {
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && alnum(s.chars().next())
        && alnum(s.chars().last())
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
}

/// Checks a label key: `name` or `prefix/name` where the prefix is a DNS
/// subdomain and the name is up to 63 characters of `[A-Za-z0-9._-]`.
pub fn check_label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        if !is_dns_subdomain(p) {
            return Err(format!(
                "invalid label key \"{key}\": the prefix before '/' must be a DNS subdomain (e.g. kubernetes.io)"
            ));
        }
    }
    if !is_label_name(name) {
        return Err(format!(
            "invalid label key \"{key}\": the name must be 1..=63 characters of letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

/// Checks a label value: empty, or up to 63 characters of `[A-Za-z0-9._-]`
/// starting and ending with an alphanumeric.
pub fn check_label_value(value: &str) -> Result<(), String> {
    if value.is_empty() || is_label_name(value) {
        Ok(())
    } else {
        Err(format!(
            "invalid label value \"{value}\": at most 63 characters of letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        ))
    }
}

/// Checks every key and value of a label map, reporting under `path`.
pub fn check_labels(path: &str, labels: &BTreeMap<String, String>, problems: &mut Problems) {
    for (k, v) in labels {
        let p = join_path(path, k);
        if let Err(e) = check_label_key(k) {
            problems.push(p.clone(), e);
        }
        if let Err(e) = check_label_value(v) {
            problems.push(p, e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_labels() {
        assert!(check_resource_name("k-w1-to-switch").is_ok());
        assert!(check_resource_name("my.ippool-1").is_ok());
        assert!(check_resource_name("Bad_Name").is_err());
        assert!(check_resource_name("").is_err());
        assert!(check_label_key("kubernetes.io/hostname").is_ok());
        assert!(check_label_key("route-reflector").is_ok());
        assert!(check_label_key("Bad/x").is_err());
        assert!(check_label_key("-x").is_err());
        assert!(check_label_value("as64512").is_ok());
        assert!(check_label_value("").is_ok());
        assert!(check_label_value("has space").is_err());
    }
}
