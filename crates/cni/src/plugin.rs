//! The command dispatcher: from the environment and stdin to the bytes on
//! stdout and the exit status, for both roles of the binary (the `tabby`
//! CNI plugin and the `tabby-ipam` IPAM plugin).
//!
//! This layer knows the specification (which variables each command needs,
//! which version has which command, what goes on stdout) and nothing about
//! datastores or netlink: the work is done by a [`Backend`], built only once
//! the configuration has been parsed (VERSION needs none).

use std::path::PathBuf;

use serde::Serialize;

use crate::config::{self, Attachment, NetConf};
use crate::env::{Command, Invocation, PodIdentity};
use crate::error::{CniError, ErrorCode};
use crate::result::CniResult;
use crate::version::CniVersion;

/// Which plugin the binary is acting as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The main plugin (`type: tabby`): veth, addresses, routes, IPAM.
    Plugin,
    /// The IPAM plugin (`ipam.type: tabby-ipam`): addresses only.
    Ipam,
}

impl Role {
    /// The role implied by the name the binary was invoked under (the
    /// basename of `argv[0]`).
    pub fn from_argv0(argv0: &str) -> Role {
        let base = argv0.rsplit('/').next().unwrap_or(argv0);
        if base == "tabby-ipam" || base == "calico-ipam" {
            Role::Ipam
        } else {
            Role::Plugin
        }
    }
}

/// One ADD, DEL or CHECK request, with everything parsed.
#[derive(Debug, Clone)]
pub struct AttachRequest {
    /// The configuration.
    pub conf: NetConf,
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// `CNI_NETNS` (always present for ADD and CHECK).
    pub netns: Option<PathBuf>,
    /// The pod, from `CNI_ARGS`.
    pub pod: Option<PodIdentity>,
    /// `CNI_ARGS`, all of it (pool annotations may be passed there).
    pub args: Vec<(String, String)>,
}

/// The work behind each command.
pub trait Backend {
    /// ADD: attach the container and return the result.
    fn add(&mut self, req: &AttachRequest) -> Result<CniResult, CniError>;
    /// DEL: detach; succeed if already gone.
    fn del(&mut self, req: &AttachRequest) -> Result<(), CniError>;
    /// CHECK: verify the attachment against `prev`.
    fn check(&mut self, req: &AttachRequest, prev: &CniResult) -> Result<(), CniError>;
    /// STATUS: can ADD be served now?
    fn status(&mut self, conf: &NetConf) -> Result<(), CniError>;
    /// GC: release everything of this network not in `valid`.
    fn gc(&mut self, conf: &NetConf, valid: &[Attachment]) -> Result<(), CniError>;
}

/// What the process prints and how it exits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Standard output (a result, a version reply, an error object, or
    /// nothing).
    pub stdout: String,
    /// The exit status: 0 on success, 1 on error.
    pub exit_code: u8,
    /// The error, if any, for the log on stderr.
    pub error: Option<CniError>,
}

/// Runs one invocation: `var` reads the environment, `stdin` is the
/// configuration, `backend` builds the backend for a parsed configuration.
pub fn run<B, F>(
    role: Role,
    var: impl Fn(&str) -> Option<String>,
    stdin: &[u8],
    backend: F,
) -> Outcome
where
    B: Backend,
    F: FnOnce(&NetConf, Role) -> Result<B, CniError>,
{
    let doc = config::decode(stdin);
    let version = doc
        .as_ref()
        .ok()
        .and_then(config::requested_version)
        .unwrap_or(CniVersion::LATEST);
    match dispatch(role, var, stdin, doc, backend) {
        Ok(stdout) => Outcome {
            stdout,
            exit_code: 0,
            error: None,
        },
        Err(e) => Outcome {
            stdout: e.to_json(version),
            exit_code: 1,
            error: Some(e),
        },
    }
}

fn dispatch<B, F>(
    role: Role,
    var: impl Fn(&str) -> Option<String>,
    stdin: &[u8],
    doc: Result<serde_json::Value, CniError>,
    backend: F,
) -> Result<String, CniError>
where
    B: Backend,
    F: FnOnce(&NetConf, Role) -> Result<B, CniError>,
{
    let inv = Invocation::from_env(&var)?;
    if inv.command == Command::Version {
        return Ok(version_reply(stdin));
    }
    let doc = doc?;
    let mut conf = NetConf::parse(&doc)?;
    if matches!(inv.command, Command::Add | Command::Check) {
        // A bad MTU file must not stop the pod; it is said on stderr (the
        // plugin's, or the agent's log when its CNI service runs this).
        if let Some(warning) = conf.resolve_mtu() {
            eprintln!(
                "tabby cni {} {}: warning: {warning}",
                inv.command.as_str(),
                inv.container_id.as_deref().unwrap_or_default()
            );
        }
    }
    if role == Role::Plugin && !matches!(conf.ipam.kind.as_str(), "tabby-ipam" | "calico-ipam") {
        return Err(CniError::new(
            ErrorCode::UnsupportedField,
            format!(
                "ipam.type: {:?}: the tabby plugin allocates through its own IPAM; use \"tabby-ipam\" (or run tabby-ipam under another plugin)",
                conf.ipam.kind
            ),
        ));
    }
    let v = conf.cni_version;
    match inv.command {
        Command::Check if !v.has_check() => {
            return Err(CniError::new(
                ErrorCode::IncompatibleVersion,
                format!("cniVersion: CHECK does not exist in CNI {v} (needs 0.4.0 or later)"),
            ));
        }
        Command::Status | Command::Gc if !v.has_status_gc() => {
            return Err(CniError::new(
                ErrorCode::IncompatibleVersion,
                format!(
                    "cniVersion: {} does not exist in CNI {v} (needs 1.1.0)",
                    inv.command.as_str()
                ),
            ));
        }
        _ => {}
    }
    // The prevResult of CHECK is checked before the backend is built, so a
    // malformed one costs no datastore connection.
    let prev = match inv.command {
        Command::Check => {
            let raw = conf.prev_result.as_ref().ok_or_else(|| {
                CniError::config("prevResult", "missing (CHECK needs the result of the ADD)")
            })?;
            Some(CniResult::from_value(raw, "prevResult")?)
        }
        _ => None,
    };
    let valid = match inv.command {
        Command::Gc => Some(conf.valid_attachments.clone().ok_or_else(|| {
            CniError::config(
                "cni.dev/valid-attachments",
                "missing (GC needs the list of valid attachments)",
            )
        })?),
        _ => None,
    };
    let mut backend = backend(&conf, role)?;
    match inv.command {
        Command::Status => backend.status(&conf).map(|()| String::new()),
        Command::Gc => backend
            .gc(&conf, valid.as_deref().unwrap_or_default())
            .map(|()| String::new()),
        Command::Add | Command::Del | Command::Check => {
            let req = AttachRequest {
                pod: inv.pod(),
                container_id: inv.container_id.clone().unwrap_or_default(),
                ifname: inv.ifname.clone().unwrap_or_default(),
                netns: inv.netns.clone(),
                args: inv.args.clone(),
                conf,
            };
            match inv.command {
                Command::Add => backend.add(&req).map(|r| r.to_json(v)),
                Command::Del => backend.del(&req).map(|()| String::new()),
                _ => match &prev {
                    Some(prev) => backend.check(&req, prev).map(|()| String::new()),
                    None => Ok(String::new()),
                },
            }
        }
        Command::Version => Ok(version_reply(stdin)),
    }
}

/// The VERSION reply, in the version the runtime asked for (the latest if
/// it asked for none or one we do not speak).
pub fn version_reply(stdin: &[u8]) -> String {
    #[derive(Serialize)]
    struct Reply {
        #[serde(rename = "cniVersion")]
        cni_version: &'static str,
        #[serde(rename = "supportedVersions")]
        supported_versions: Vec<&'static str>,
    }
    let asked = serde_json::from_slice::<serde_json::Value>(stdin)
        .ok()
        .as_ref()
        .and_then(config::requested_version)
        .unwrap_or(CniVersion::LATEST);
    let reply = Reply {
        cni_version: asked.as_str(),
        supported_versions: CniVersion::SUPPORTED.iter().map(|v| v.as_str()).collect(),
    };
    serde_json::to_string(&reply).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use serde_json::{Value, json};

    use super::*;
    use crate::result::IpConfig;

    /// Records what it was asked; answers ADD with one address.
    #[derive(Default)]
    struct Recorder {
        calls: Vec<String>,
    }

    impl Backend for &mut Recorder {
        fn add(&mut self, req: &AttachRequest) -> Result<CniResult, CniError> {
            self.calls
                .push(format!("add {} {}", req.container_id, req.ifname));
            Ok(CniResult {
                ips: vec![IpConfig {
                    address: "10.244.0.7/32".parse().expect("net"),
                    gateway: None,
                    interface: None,
                }],
                ..CniResult::default()
            })
        }
        fn del(&mut self, req: &AttachRequest) -> Result<(), CniError> {
            self.calls.push(format!("del {}", req.container_id));
            Ok(())
        }
        fn check(&mut self, _: &AttachRequest, prev: &CniResult) -> Result<(), CniError> {
            self.calls.push(format!("check {}", prev.ips.len()));
            Ok(())
        }
        fn status(&mut self, _: &NetConf) -> Result<(), CniError> {
            self.calls.push("status".into());
            Err(CniError::new(
                ErrorCode::PluginNotAvailable,
                "datastore down",
            ))
        }
        fn gc(&mut self, _: &NetConf, valid: &[Attachment]) -> Result<(), CniError> {
            self.calls.push(format!("gc {}", valid.len()));
            Ok(())
        }
    }

    fn env(cmd: &str) -> HashMap<String, String> {
        [
            ("CNI_COMMAND", cmd),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", "/var/run/netns/p"),
            ("CNI_IFNAME", "eth0"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    fn invoke(rec: &mut Recorder, env: &HashMap<String, String>, conf: &Value) -> Outcome {
        let stdin = conf.to_string();
        run(
            Role::Plugin,
            |k| env.get(k).cloned(),
            stdin.as_bytes(),
            |_, _| Ok(&mut *rec),
        )
    }

    fn conf(version: &str) -> Value {
        json!({"cniVersion": version, "name": "k8s-pod-network", "type": "tabby"})
    }

    #[test]
    fn add_prints_the_result_in_the_requested_version() {
        let mut rec = Recorder::default();
        for v in ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
            let out = invoke(&mut rec, &env("ADD"), &conf(v));
            assert_eq!(out.exit_code, 0, "{v}: {}", out.stdout);
            let r: Value = serde_json::from_str(&out.stdout).expect("json");
            assert_eq!(r["cniVersion"], v);
            assert_eq!(r["ips"][0]["address"], "10.244.0.7/32");
            assert_eq!(r["ips"][0].get("version").is_some(), v.starts_with('0'));
        }
        assert_eq!(rec.calls.len(), 5);
    }

    #[test]
    fn version_lists_every_supported_version() {
        let mut rec = Recorder::default();
        let out = invoke(&mut rec, &env("VERSION"), &json!({"cniVersion": "1.0.0"}));
        assert_eq!(out.exit_code, 0);
        let r: Value = serde_json::from_str(&out.stdout).expect("json");
        assert_eq!(r["cniVersion"], "1.0.0");
        assert_eq!(
            r["supportedVersions"],
            json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
        );
        // VERSION with nothing on stdin still answers.
        let e = env("VERSION");
        let out = run(
            Role::Plugin,
            |k| e.get(k).cloned(),
            b"",
            |_, _| Ok(&mut rec),
        );
        assert_eq!(out.exit_code, 0);
        assert!(rec.calls.is_empty(), "VERSION must not build a backend");
    }

    #[test]
    fn errors_are_cni_error_objects_in_the_requested_version() {
        let mut rec = Recorder::default();
        let mut e = env("ADD");
        e.remove("CNI_NETNS");
        let out = invoke(&mut rec, &e, &conf("0.4.0"));
        assert_eq!(out.exit_code, 1);
        let r: Value = serde_json::from_str(&out.stdout).expect("json");
        assert_eq!(r["code"], 4);
        assert_eq!(r["cniVersion"], "0.4.0");
        assert!(
            r["details"]
                .as_str()
                .expect("details")
                .contains("CNI_NETNS")
        );

        let out = run(
            Role::Plugin,
            |k| env("ADD").get(k).cloned(),
            b"{not json",
            |_, _| Ok(&mut rec),
        );
        let r: Value = serde_json::from_str(&out.stdout).expect("json");
        assert_eq!(r["code"], 6);

        let out = invoke(&mut rec, &env("ADD"), &conf("0.2.0"));
        let r: Value = serde_json::from_str(&out.stdout).expect("json");
        assert_eq!(r["code"], 1);

        let mut c = conf("1.0.0");
        c["ipam"] = json!({"type": "host-local"});
        let out = invoke(&mut rec, &env("ADD"), &c);
        let r: Value = serde_json::from_str(&out.stdout).expect("json");
        assert_eq!(r["code"], 2);
        assert!(
            r["details"]
                .as_str()
                .expect("details")
                .starts_with("ipam.type")
        );
        assert!(rec.calls.is_empty(), "no backend call on bad input");
    }

    #[test]
    fn check_needs_0_4_and_a_prev_result() {
        let mut rec = Recorder::default();
        let out = invoke(&mut rec, &env("CHECK"), &conf("0.3.1"));
        assert_eq!(
            serde_json::from_str::<Value>(&out.stdout).expect("json")["code"],
            1
        );
        let out = invoke(&mut rec, &env("CHECK"), &conf("1.0.0"));
        let r: Value = serde_json::from_str(&out.stdout).expect("json");
        assert_eq!(r["code"], 7);
        assert!(r["details"].as_str().expect("d").starts_with("prevResult"));
        let mut c = conf("1.0.0");
        c["prevResult"] = json!({"cniVersion": "1.0.0", "ips": [{"address": "10.244.0.7/32"}]});
        let out = invoke(&mut rec, &env("CHECK"), &c);
        assert_eq!(out.exit_code, 0, "{}", out.stdout);
        assert!(out.stdout.is_empty());
        assert_eq!(rec.calls, vec!["check 1"]);
    }

    #[test]
    fn status_and_gc_are_1_1_commands() {
        let mut rec = Recorder::default();
        let e: HashMap<String, String> = [("CNI_COMMAND".to_owned(), "STATUS".to_owned())].into();
        let out = invoke(&mut rec, &e, &conf("1.0.0"));
        assert_eq!(
            serde_json::from_str::<Value>(&out.stdout).expect("json")["code"],
            1
        );
        let out = invoke(&mut rec, &e, &conf("1.1.0"));
        assert_eq!(
            serde_json::from_str::<Value>(&out.stdout).expect("json")["code"],
            50
        );

        let e: HashMap<String, String> = [("CNI_COMMAND".to_owned(), "GC".to_owned())].into();
        let out = invoke(&mut rec, &e, &conf("1.1.0"));
        assert_eq!(
            serde_json::from_str::<Value>(&out.stdout).expect("json")["code"],
            7
        );
        let mut c = conf("1.1.0");
        c["cni.dev/valid-attachments"] = json!([{"containerID": "a", "ifname": "eth0"}]);
        let out = invoke(&mut rec, &e, &c);
        assert_eq!(out.exit_code, 0);
        assert!(out.stdout.is_empty());
        assert_eq!(rec.calls, vec!["status", "gc 1"]);
    }

    #[test]
    fn role_follows_argv0() {
        assert_eq!(Role::from_argv0("/opt/cni/bin/tabby-ipam"), Role::Ipam);
        assert_eq!(Role::from_argv0("tabby-ipam"), Role::Ipam);
        assert_eq!(Role::from_argv0("/opt/cni/bin/tabby"), Role::Plugin);
    }
}
