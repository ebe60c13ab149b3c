//! The invocation: the `CNI_*` environment variables a runtime sets, parsed
//! into a [`Invocation`] with one precise error (code 4, naming the
//! variable) for each one that is missing or malformed.

use std::path::PathBuf;

use crate::error::{CniError, ErrorCode};

/// The operation the runtime asks for (`CNI_COMMAND`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Command {
    /// Attach a container to the network.
    Add,
    /// Detach a container; idempotent.
    Del,
    /// Verify an attachment against its previous result (0.4.0+).
    Check,
    /// Report readiness to serve ADD (1.1.0).
    Status,
    /// Release whatever is not in the list of valid attachments (1.1.0).
    Gc,
    /// Report the supported spec versions.
    Version,
}

impl Command {
    /// Parses a `CNI_COMMAND` value.
    pub fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            "VERSION" => Command::Version,
            _ => return None,
        })
    }

    /// The command as the spec spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Status => "STATUS",
            Command::Gc => "GC",
            Command::Version => "VERSION",
        }
    }
}

/// The Kubernetes identity of the pod, from `CNI_ARGS`, when the runtime
/// passes it (kubelet's CRI runtimes do).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodIdentity {
    /// `K8S_POD_NAMESPACE`.
    pub namespace: String,
    /// `K8S_POD_NAME`.
    pub name: String,
}

/// Everything the environment says about one plugin invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// `CNI_COMMAND`.
    pub command: Command,
    /// `CNI_CONTAINERID`: present for ADD, DEL and CHECK.
    pub container_id: Option<String>,
    /// `CNI_NETNS`: present for ADD and CHECK; optional for DEL.
    pub netns: Option<PathBuf>,
    /// `CNI_IFNAME`: present for ADD, DEL and CHECK.
    pub ifname: Option<String>,
    /// `CNI_ARGS`, as key/value pairs in order.
    pub args: Vec<(String, String)>,
    /// `CNI_PATH`, split on `:`.
    pub path: Vec<PathBuf>,
}

impl Invocation {
    /// Reads the invocation through `var` (the process environment, or a map
    /// in tests).
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Invocation, CniError> {
        let command_str =
            var("CNI_COMMAND").ok_or_else(|| CniError::env("CNI_COMMAND", "not set"))?;
        let command = Command::parse(&command_str).ok_or_else(|| {
            CniError::env(
                "CNI_COMMAND",
                format!(
                    "unknown command {command_str:?} (expected ADD, DEL, CHECK, STATUS, GC or VERSION)"
                ),
            )
        })?;
        let attach = matches!(command, Command::Add | Command::Del | Command::Check);
        let non_empty = |name: &str| var(name).filter(|v| !v.is_empty());

        let container_id = match non_empty("CNI_CONTAINERID") {
            Some(id) => {
                validate_container_id(&id)?;
                Some(id)
            }
            None if attach => return Err(CniError::env("CNI_CONTAINERID", "not set")),
            None => None,
        };
        let netns = match non_empty("CNI_NETNS") {
            Some(p) => Some(PathBuf::from(p)),
            None if matches!(command, Command::Add | Command::Check) => {
                return Err(CniError::env(
                    "CNI_NETNS",
                    format!("not set (required for {})", command.as_str()),
                ));
            }
            None => None,
        };
        let ifname = match non_empty("CNI_IFNAME") {
            Some(n) => {
                validate_ifname(&n)?;
                Some(n)
            }
            None if attach => return Err(CniError::env("CNI_IFNAME", "not set")),
            None => None,
        };
        let args = match var("CNI_ARGS") {
            Some(a) => parse_args(&a)?,
            None => Vec::new(),
        };
        let path = var("CNI_PATH")
            .map(|p| {
                p.split(':')
                    .filter(|s| !s.is_empty())
                    .map(PathBuf::from)
                    .collect()
            })
            .unwrap_or_default();
        Ok(Invocation {
            command,
            container_id,
            netns,
            ifname,
            args,
            path,
        })
    }

    /// The value of `key` in `CNI_ARGS`.
    pub fn arg(&self, key: &str) -> Option<&str> {
        self.args
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The pod's namespace and name when `CNI_ARGS` carries both.
    pub fn pod(&self) -> Option<PodIdentity> {
        let namespace = self.arg("K8S_POD_NAMESPACE")?;
        let name = self.arg("K8S_POD_NAME")?;
        (!namespace.is_empty() && !name.is_empty()).then(|| PodIdentity {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        })
    }
}

/// The spec's rule: an alphanumeric first character, then alphanumerics,
/// `_`, `.` or `-`.
fn validate_container_id(id: &str) -> Result<(), CniError> {
    let mut chars = id.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if first_ok && rest_ok {
        Ok(())
    } else {
        Err(CniError::env(
            "CNI_CONTAINERID",
            format!(
                "{id:?} is not a valid container id (alphanumeric first, then alphanumerics, '_', '.' or '-')"
            ),
        ))
    }
}

/// The kernel's rule for interface names, as the spec states it.
fn validate_ifname(name: &str) -> Result<(), CniError> {
    let why = if name.len() >= 16 {
        Some("longer than 15 bytes")
    } else if name == "." || name == ".." {
        Some("`.` and `..` are not interface names")
    } else if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        Some("contains '/', ':' or whitespace")
    } else {
        None
    };
    match why {
        Some(why) => Err(CniError::env("CNI_IFNAME", format!("{name:?}: {why}"))),
        None => Ok(()),
    }
}

/// Parses `K1=V1;K2=V2`. Empty segments are skipped.
fn parse_args(s: &str) -> Result<Vec<(String, String)>, CniError> {
    s.split(';')
        .filter(|seg| !seg.is_empty())
        .map(|seg| match seg.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
            _ => Err(CniError::new(
                ErrorCode::InvalidEnvironment,
                format!("CNI_ARGS: {seg:?} is not KEY=VALUE"),
            )),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn inv(pairs: &[(&str, &str)]) -> Result<Invocation, CniError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Invocation::from_env(|k| map.get(k).cloned())
    }

    const ADD: &[(&str, &str)] = &[
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "abc123"),
        ("CNI_NETNS", "/var/run/netns/x"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin:/usr/lib/cni"),
        (
            "CNI_ARGS",
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0",
        ),
    ];

    #[test]
    fn full_add_invocation() {
        let i = inv(ADD).expect("valid");
        assert_eq!(i.command, Command::Add);
        assert_eq!(i.container_id.as_deref(), Some("abc123"));
        assert_eq!(i.path.len(), 2);
        assert_eq!(
            i.pod(),
            Some(PodIdentity {
                namespace: "default".into(),
                name: "web-0".into()
            })
        );
    }

    fn without(var: &str) -> Vec<(&'static str, &'static str)> {
        ADD.iter().copied().filter(|(k, _)| *k != var).collect()
    }

    #[test]
    fn each_missing_variable_is_named() {
        for var in ["CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"] {
            let e = inv(&without(var)).expect_err(var);
            assert_eq!(e.code, ErrorCode::InvalidEnvironment);
            assert!(e.details.starts_with(var), "{var}: {}", e.details);
        }
    }

    #[test]
    fn del_does_not_need_a_netns_and_version_needs_nothing() {
        let mut del = without("CNI_NETNS");
        del[0] = ("CNI_COMMAND", "DEL");
        assert!(inv(&del).expect("del").netns.is_none());
        assert!(inv(&[("CNI_COMMAND", "VERSION")]).is_ok());
        assert!(inv(&[("CNI_COMMAND", "STATUS")]).is_ok());
        assert!(inv(&[("CNI_COMMAND", "GC")]).is_ok());
    }

    #[test]
    fn malformed_values_are_refused() {
        let cases: &[(&str, &str)] = &[
            ("CNI_COMMAND", "FROB"),
            ("CNI_CONTAINERID", "-abc"),
            ("CNI_CONTAINERID", "a b"),
            ("CNI_IFNAME", "averyveryverylongname"),
            ("CNI_IFNAME", "et/h0"),
            ("CNI_IFNAME", ".."),
            ("CNI_ARGS", "K8S_POD_NAME"),
        ];
        for (var, value) in cases {
            let mut env = without(var);
            env.push((var, value));
            let e = inv(&env).expect_err(value);
            assert_eq!(e.code, ErrorCode::InvalidEnvironment, "{var}={value}");
            assert!(e.details.starts_with(var), "{}", e.details);
        }
    }
}
