//! Running a command inside a small virtual machine with a kernel of our
//! choosing, for behaviour the host kernel cannot show (this machine's
//! kernel has no IPIP, for instance).
//!
//! A [`Vm`] names a [`Kernel`] (Debian's, unpacked by
//! `scripts/install-deps.sh` under [`DEFAULT_ROOT`]), the kernel modules to
//! load, host files and programs to copy in (programs bring every shared
//! library `ldd` lists), and the command to run. [`Vm::run`] builds an
//! initramfs in a temporary directory (busybox-static and its applets, the
//! modules in dependency order, the files, an `/init` script), boots it
//! under `qemu-system-x86_64` with no network device at all (`-nic none`:
//! nothing leaves the machine), and collects the serial console. `/init`
//! mounts proc/sys/dev/run/tmp, loads the modules, runs the command, prints
//! its exit status as a marker line and powers the machine off; the host
//! reads the markers, so a guest that fails to boot, to load a module, or to
//! run the command is an error, never a pass. The qemu process is killed by
//! PID when the run ends or times out.
//!
//! Acceleration: KVM when `/dev/kvm` can really run a stock kernel, TCG
//! (emulation, slower) otherwise; [`Accel::detect`] says which and why, and
//! `TABBY_VM_ACCEL=kvm|tcg` overrides it.

mod initramfs;

use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::Process;
use initramfs::Initramfs;

/// Where `scripts/install-deps.sh` unpacks Debian's kernel package
/// (`boot/vmlinuz-*`, `boot/config-*`, `lib/modules/*`). `TABBY_VM_ROOT`
/// overrides it.
pub const DEFAULT_ROOT: &str = "/opt/tabby-vm";

/// Prefix of the marker lines `/init` prints; a per-run token follows it,
/// so nothing the command prints can pass for a marker.
const MARK: &str = "tabby-vm:";

/// This run's marker prefix (`tabby-vm:<token>`).
fn run_marker() -> String {
    static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{MARK}{:x}{nanos:x}{n:x}", std::process::id())
}

/// What went wrong while preparing or running a virtual machine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VmError {
    /// A setting or argument is unusable.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The setting.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The guest kernel is not installed where it was looked for.
    #[error("no guest kernel under {root}: {reason} (scripts/install-deps.sh unpacks one)")]
    KernelMissing {
        /// The directory searched.
        root: PathBuf,
        /// What was missing.
        reason: String,
    },
    /// A kernel module cannot be found or prepared.
    #[error("kernel module {name}: {reason}")]
    Module {
        /// Module name (or file).
        name: String,
        /// Why.
        reason: String,
    },
    /// A host file operation failed.
    #[error("cannot {what}: {source}")]
    Io {
        /// The operation.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The guest did not get as far as reporting its command's exit status.
    #[error("guest failed ({accel}): {reason}\n--- console ---\n{console}")]
    Guest {
        /// The accelerator used.
        accel: Accel,
        /// What happened (qemu exited early, a module failed to load, ...).
        reason: String,
        /// Everything the guest and qemu printed.
        console: String,
    },
    /// The guest was still running when the timeout passed; it was killed.
    #[error("guest still running after {after:?} ({accel}); killed\n--- console ---\n{console}")]
    Timeout {
        /// The timeout.
        after: Duration,
        /// The accelerator used.
        accel: Accel,
        /// Everything the guest printed.
        console: String,
    },
}

/// A guest kernel: its image and its modules.
#[derive(Debug, Clone)]
pub struct Kernel {
    root: PathBuf,
    image: PathBuf,
    release: String,
}

impl Kernel {
    /// The kernel install-deps.sh unpacked ([`DEFAULT_ROOT`], or
    /// `TABBY_VM_ROOT`).
    pub fn installed() -> Result<Kernel, VmError> {
        let root = std::env::var_os("TABBY_VM_ROOT")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_ROOT));
        Kernel::at(&root)
    }

    /// A kernel package unpacked at `root` (`dpkg -x linux-image-*.deb root`):
    /// the one `boot/vmlinuz-RELEASE` with `lib/modules/RELEASE` beside it
    /// (the highest release if there are several).
    pub fn at(root: &Path) -> Result<Kernel, VmError> {
        let missing = |reason: String| VmError::KernelMissing {
            root: root.to_path_buf(),
            reason,
        };
        let boot = root.join("boot");
        let entries =
            std::fs::read_dir(&boot).map_err(|e| missing(format!("{}: {e}", boot.display())))?;
        let mut releases: Vec<String> = entries
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_prefix("vmlinuz-"))
                    .map(str::to_owned)
            })
            .filter(|r| root.join("lib/modules").join(r).is_dir())
            .collect();
        releases.sort();
        let release = releases
            .pop()
            .ok_or_else(|| missing("no boot/vmlinuz-RELEASE with lib/modules/RELEASE".into()))?;
        Ok(Kernel {
            image: boot.join(format!("vmlinuz-{release}")),
            root: root.to_path_buf(),
            release,
        })
    }

    /// The kernel image (`bzImage`).
    pub fn image(&self) -> &Path {
        &self.image
    }

    /// The kernel release (`6.1.0-27-amd64`).
    pub fn release(&self) -> &str {
        &self.release
    }

    /// The directory holding its modules.
    pub fn modules_dir(&self) -> PathBuf {
        self.root.join("lib/modules").join(&self.release)
    }

    /// The `qemu-system-x86_64` command to boot it with: `TABBY_VM_QEMU`
    /// if set, else the qemu unpacked beside the kernel (`ROOT/qemu`, with
    /// its firmware and module directories), else the one on `PATH`.
    pub fn qemu(&self) -> Command {
        if let Some(q) = std::env::var_os("TABBY_VM_QEMU") {
            return Command::new(q);
        }
        let unpacked = self.root.join("qemu");
        let binary = unpacked.join("usr/bin/qemu-system-x86_64");
        if !binary.exists() {
            return Command::new("qemu-system-x86_64");
        }
        let mut c = Command::new(binary);
        c.arg("-L")
            .arg(unpacked.join("usr/share/qemu"))
            .arg("-L")
            .arg(unpacked.join("usr/share/seabios"))
            .env(
                "QEMU_MODULE_DIR",
                unpacked.join("usr/lib/x86_64-linux-gnu/qemu"),
            );
        c
    }

    /// A build option's value from `boot/config-RELEASE` (`Some("m")` for
    /// `CONFIG_NET_IPIP=m`), `None` if it is not set.
    pub fn config(&self, option: &str) -> Result<Option<String>, VmError> {
        let path = self
            .root
            .join("boot")
            .join(format!("config-{}", self.release));
        let text = std::fs::read_to_string(&path).map_err(|source| VmError::Io {
            what: format!("read {}", path.display()),
            source,
        })?;
        Ok(text.lines().find_map(|l| {
            l.strip_prefix(option)
                .and_then(|r| r.strip_prefix('='))
                .map(str::to_owned)
        }))
    }
}

/// How qemu runs the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Accel {
    /// Hardware virtualisation through `/dev/kvm`.
    Kvm,
    /// qemu's emulator (no `/dev/kvm` needed; several times slower).
    Tcg,
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        })
    }
}

impl Accel {
    /// KVM if it can run a stock kernel here, TCG otherwise, with the reason.
    /// `TABBY_VM_ACCEL=kvm|tcg` overrides the choice.
    pub fn detect() -> Result<(Accel, String), VmError> {
        match std::env::var("TABBY_VM_ACCEL").ok().as_deref() {
            Some("kvm") => return Ok((Accel::Kvm, "TABBY_VM_ACCEL=kvm".into())),
            Some("tcg") => return Ok((Accel::Tcg, "TABBY_VM_ACCEL=tcg".into())),
            Some(other) => {
                return Err(VmError::Invalid {
                    field: "TABBY_VM_ACCEL",
                    reason: format!("{other:?} is neither kvm nor tcg"),
                });
            }
            None => {}
        }
        if let Err(e) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
        {
            return Ok((
                Accel::Tcg,
                format!("/dev/kvm cannot be opened read-write: {e}"),
            ));
        }
        // PVM ("pagetable-based virtual machine", nested KVM without VMX/SVM
        // in the guest CPU) runs only guest kernels built for it; a stock
        // kernel stops right after decompressing itself.
        if Path::new("/sys/module/kvm_pvm").exists() {
            return Ok((
                Accel::Tcg,
                "/dev/kvm is PVM (module kvm_pvm), which runs only PVM-enabled guest kernels"
                    .into(),
            ));
        }
        Ok((Accel::Kvm, "/dev/kvm is usable".into()))
    }
}

/// A host file to place in the guest.
#[derive(Debug, Clone)]
struct GuestFile {
    host: PathBuf,
    guest: PathBuf,
    with_libraries: bool,
}

/// A virtual machine to run one command in (see the module docs).
#[derive(Debug, Clone)]
pub struct Vm {
    kernel: Kernel,
    modules: Vec<String>,
    files: Vec<GuestFile>,
    command: Vec<String>,
    env: Vec<(String, String)>,
    memory_mib: u32,
    timeout: Duration,
    accel: Option<Accel>,
    kernel_args: Vec<String>,
}

/// What a finished guest run reported.
#[derive(Debug, Clone)]
pub struct VmRun {
    /// The accelerator used.
    pub accel: Accel,
    /// Why it was chosen.
    pub accel_reason: String,
    /// From starting qemu to `/init` running (kernel boot).
    pub boot_time: Duration,
    /// From starting qemu to the command's exit marker.
    pub total_time: Duration,
    /// The command's exit status.
    pub exit_code: i32,
    /// What the command printed (stdout and stderr, through the console).
    pub output: String,
    /// The whole console, boot messages included.
    pub console: String,
    /// Size of the initramfs contents.
    pub initramfs_bytes: usize,
}

impl VmRun {
    /// True if the command exited with status 0.
    pub fn success(&self) -> bool {
        self.exit_code == 0
    }

    /// Prints the command's output, each line as `guest| LINE`.
    pub fn print_output(&self) {
        for line in self.output.lines() {
            println!("guest| {line}");
        }
    }

    /// Prints the output ([`VmRun::print_output`]) and panics unless the
    /// guest exited with 0 and reported every one of `checks`
    /// ([`VmRun::missing_checks`]); the panic carries the output and the
    /// console. What every VM test asserts first.
    pub fn assert_checks_passed<'a>(&self, checks: impl IntoIterator<Item = &'a str>) {
        self.print_output();
        assert!(
            self.success(),
            "guest exited with {}\n--- output ---\n{}\n--- console ---\n{}",
            self.exit_code,
            self.output,
            self.console
        );
        let missing = self.missing_checks(checks);
        assert!(
            missing.is_empty(),
            "guest did not report {missing:?}\n--- output ---\n{}\n--- console ---\n{}",
            self.output,
            self.console
        );
    }

    /// The names among `checks` that the guest did not report with a line
    /// `tabby-guest: check NAME ok` (the convention of the VM tests).
    pub fn missing_checks<'a>(&self, checks: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
        checks
            .into_iter()
            .filter(|name| {
                let want = format!("tabby-guest: check {name} ok");
                !self.output.lines().any(|l| l.trim() == want)
            })
            .collect()
    }
}

/// The host's iproute2 `ip`, to copy into a guest (busybox's own applet
/// has no `netns`), if it is installed.
pub fn host_ip() -> Option<&'static str> {
    ["/usr/sbin/ip", "/usr/bin/ip", "/sbin/ip", "/bin/ip"]
        .into_iter()
        .find(|p| Path::new(p).exists())
}

/// `main` of a VM test binary built with `harness = false`, which is both
/// sides of one test named `test`: with `--guest` first it runs `guest`
/// (inside the VM) and returns its status; otherwise it answers enough of
/// libtest's command line for `cargo test`: `--list` lists the test, free
/// arguments are name filters (none matching: the test is filtered out),
/// and else `host` runs it (a failure panics, as in a test).
pub fn test_main(
    test: &str,
    host: impl FnOnce(),
    guest: impl FnOnce() -> std::process::ExitCode,
) -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--guest") {
        return guest();
    }
    if args.iter().any(|a| a == "--list") {
        println!("{test}: test");
        return std::process::ExitCode::SUCCESS;
    }
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    if !filters.is_empty() && !filters.iter().any(|f| test.contains(f.as_str())) {
        println!("\nrunning 0 tests\n\ntest result: ok. 0 passed; 0 failed; 1 filtered out\n");
        return std::process::ExitCode::SUCCESS;
    }
    println!("\nrunning 1 test");
    host();
    println!("test {test} ... ok\n\ntest result: ok. 1 passed; 0 failed\n");
    std::process::ExitCode::SUCCESS
}

/// Quotes a word for `/bin/sh`.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

impl Vm {
    /// A machine booting `kernel` with 512 MiB, a 300 s timeout and nothing
    /// to run yet.
    pub fn new(kernel: Kernel) -> Vm {
        Vm {
            kernel,
            modules: Vec::new(),
            files: Vec::new(),
            command: Vec::new(),
            env: Vec::new(),
            memory_mib: 512,
            timeout: Duration::from_secs(300),
            accel: None,
            kernel_args: Vec::new(),
        }
    }

    /// Loads module `name` (and, first, what it depends on) before the
    /// command runs.
    pub fn module(mut self, name: &str) -> Vm {
        self.modules.push(name.to_owned());
        self
    }

    /// Copies a host file to `guest` (an absolute path).
    pub fn file(mut self, host: impl Into<PathBuf>, guest: impl Into<PathBuf>) -> Vm {
        self.files.push(GuestFile {
            host: host.into(),
            guest: guest.into(),
            with_libraries: false,
        });
        self
    }

    /// Copies a host program to `guest` together with the shared libraries
    /// and dynamic loader `ldd` lists for it (at their host paths).
    pub fn program(mut self, host: impl Into<PathBuf>, guest: impl Into<PathBuf>) -> Vm {
        self.files.push(GuestFile {
            host: host.into(),
            guest: guest.into(),
            with_libraries: true,
        });
        self
    }

    /// The command to run (program and arguments; looked up on the
    /// guest's `PATH`).
    pub fn command<I, S>(mut self, argv: I) -> Vm
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.command = argv.into_iter().map(Into::into).collect();
        self
    }

    /// Sets an environment variable for the command.
    pub fn env(mut self, key: &str, value: &str) -> Vm {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Guest memory.
    pub fn memory_mib(mut self, mib: u32) -> Vm {
        self.memory_mib = mib;
        self
    }

    /// How long the whole run may take before the guest is killed.
    pub fn timeout(mut self, timeout: Duration) -> Vm {
        self.timeout = timeout;
        self
    }

    /// Forces an accelerator instead of [`Accel::detect`].
    pub fn accel(mut self, accel: Accel) -> Vm {
        self.accel = Some(accel);
        self
    }

    /// Appends a kernel command-line argument.
    pub fn kernel_arg(mut self, arg: &str) -> Vm {
        self.kernel_args.push(arg.to_owned());
        self
    }

    fn init_script(&self, modules: &[String], mark: &str) -> Result<String, VmError> {
        if self.command.is_empty() {
            return Err(VmError::Invalid {
                field: "command",
                reason: "no command to run in the guest".into(),
            });
        }
        let mut s = String::from(
            "#!/bin/sh\n\
             export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root\n\
             mount -t proc proc /proc\n\
             mount -t sysfs sysfs /sys\n\
             mount -t devtmpfs devtmpfs /dev 2>/dev/null\n\
             mount -t tmpfs tmpfs /run\n\
             mount -t tmpfs tmpfs /tmp\n\
             ip link set lo up 2>/dev/null\n",
        );
        s.push_str(&format!("echo \"{mark} up $(uname -r)\"\n"));
        for m in modules {
            s.push_str(&format!(
                "insmod /lib/modules/tabby-vm/{m}.ko || {{ echo \"{mark} insmod-failed {m}\"; poweroff -f; }}\n"
            ));
        }
        for (k, v) in &self.env {
            if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(VmError::Invalid {
                    field: "env",
                    reason: format!("{k:?} is not a variable name"),
                });
            }
            s.push_str(&format!("export {k}={}\n", sh_quote(v)));
        }
        let argv: Vec<String> = self.command.iter().map(|a| sh_quote(a)).collect();
        s.push_str(&format!("echo \"{mark} run\"\n"));
        s.push_str(&format!("{} </dev/null\n", argv.join(" ")));
        s.push_str(&format!("echo \"{mark} exit $?\"\n"));
        s.push_str("sync\npoweroff -f\n");
        Ok(s)
    }

    /// Builds the initramfs: busybox, modules, files, `/init`.
    fn initramfs(&self, mark: &str) -> Result<Initramfs, VmError> {
        let mut fs = Initramfs::default();
        for d in [
            "/proc", "/sys", "/dev", "/run", "/tmp", "/root", "/etc", "/var",
        ] {
            fs.dir(d)?;
        }
        fs.char_device("/dev/console", 5, 1)?;
        fs.char_device("/dev/null", 1, 3)?;
        fs.symlink_if_free(Path::new("/var/run"), "/run")?;
        // Just root, for programs that look users up (tcpdump -Z root).
        fs.bytes(
            Path::new("/etc/passwd"),
            b"root:x:0:0:root:/root:/bin/sh\n".to_vec(),
            0o644,
        )?;
        fs.bytes(Path::new("/etc/group"), b"root:x:0:\n".to_vec(), 0o644)?;

        for f in &self.files {
            fs.copy(&f.host, &f.guest)?;
            if f.with_libraries {
                for lib in initramfs::shared_libraries(&f.host)? {
                    if !fs.contains(&lib) {
                        fs.copy(&lib, &lib)?;
                    }
                }
            }
        }

        // busybox-static: every applet as a symlink, except where a copied
        // program of the same name sits in a bin directory (iproute2's `ip`
        // wins over busybox's).
        let busybox = ["/bin/busybox", "/usr/bin/busybox"]
            .into_iter()
            .map(Path::new)
            .find(|p| p.exists())
            .ok_or_else(|| VmError::Invalid {
                field: "busybox",
                reason: "no /bin/busybox (package busybox-static)".into(),
            })?;
        fs.copy(busybox, Path::new("/bin/busybox"))?;
        let names: Vec<String> = self
            .files
            .iter()
            .filter_map(|f| {
                f.guest
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
            })
            .collect();
        let list = Command::new(busybox)
            .arg("--list-full")
            .output()
            .map_err(|source| VmError::Io {
                what: format!("run `{} --list-full`", busybox.display()),
                source,
            })?;
        for applet in String::from_utf8_lossy(&list.stdout).lines() {
            let path = Path::new("/").join(applet.trim());
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            if name.is_some_and(|n| names.contains(&n)) {
                continue;
            }
            fs.symlink_if_free(&path, "/bin/busybox")?;
        }

        let index = initramfs::index_modules(&self.kernel.modules_dir())?;
        let ordered = initramfs::load_order(&index, &self.modules)?;
        let mut names = Vec::new();
        for (name, image) in ordered {
            fs.bytes(
                &Path::new("/lib/modules/tabby-vm").join(format!("{name}.ko")),
                image,
                0o644,
            )?;
            names.push(name);
        }
        fs.bytes(
            Path::new("/init"),
            self.init_script(&names, mark)?.into_bytes(),
            0o755,
        )?;
        Ok(fs)
    }

    fn qemu(&self, accel: Accel, initrd: &Path) -> Command {
        let mut append = vec!["console=ttyS0", "panic=-1", "quiet"];
        append.extend(self.kernel_args.iter().map(String::as_str));
        let mut c = self.kernel.qemu();
        c.args(["-accel", &accel.to_string()])
            .args(["-cpu", if accel == Accel::Kvm { "host" } else { "max" }])
            .args(["-m", &self.memory_mib.to_string(), "-smp", "1"])
            .args([
                "-nographic",
                "-vga",
                "none",
                "-no-reboot",
                "-no-user-config",
            ])
            .args(["-nic", "none"])
            .arg("-kernel")
            .arg(self.kernel.image())
            .arg("-initrd")
            .arg(initrd)
            .args(["-append", &append.join(" ")])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    /// Boots the machine, runs the command, powers off. An error unless the
    /// guest reported the command's exit status (which may be non-zero: see
    /// [`VmRun::success`]).
    pub fn run(&self) -> Result<VmRun, VmError> {
        let (accel, reason) = match self.accel {
            Some(a) => (a, "chosen by the caller".to_owned()),
            None => Accel::detect()?,
        };
        let dir = tempfile::tempdir().map_err(|source| VmError::Io {
            what: "create a temporary directory".into(),
            source,
        })?;
        let mark = run_marker();
        let fs = self.initramfs(&mark)?;
        let initrd = dir.path().join("initramfs.cpio");
        let mut bytes = Vec::with_capacity(fs.content_bytes() + (1 << 20));
        fs.write(&mut bytes)
            .and_then(|()| std::fs::write(&initrd, &bytes))
            .map_err(|source| VmError::Io {
                what: format!("write {}", initrd.display()),
                source,
            })?;
        match self.boot(accel, &reason, &initrd, fs.content_bytes(), &mark) {
            // qemu refusing KVM outright (it exits before the guest prints a
            // line) falls back to TCG once, unless KVM was asked for.
            Err(VmError::Guest { console, .. })
                if accel == Accel::Kvm
                    && self.accel.is_none()
                    && std::env::var_os("TABBY_VM_ACCEL").is_none()
                    && !console.contains(&mark) =>
            {
                let why = format!(
                    "KVM failed to start ({}), fell back",
                    console.lines().last().unwrap_or("no output").trim()
                );
                self.boot(Accel::Tcg, &why, &initrd, fs.content_bytes(), &mark)
            }
            other => other,
        }
    }

    fn boot(
        &self,
        accel: Accel,
        reason: &str,
        initrd: &Path,
        initramfs_bytes: usize,
        mark: &str,
    ) -> Result<VmRun, VmError> {
        let start = Instant::now();
        let mut qemu =
            Process::spawn(&mut self.qemu(accel, initrd)).map_err(|e| VmError::Guest {
                accel,
                reason: e.to_string(),
                console: String::new(),
            })?;
        let stdout = qemu.child_mut().stdout.take();
        let stderr = qemu.child_mut().stderr.take();
        let (tx, rx) = mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            if let Some(out) = stdout {
                for line in BufReader::new(out).split(b'\n').map_while(Result::ok) {
                    let line = String::from_utf8_lossy(&line).replace('\r', "");
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            }
        });
        let err_reader = std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut e) = stderr {
                let _ = e.read_to_string(&mut s);
            }
            s
        });

        let deadline = start + self.timeout;
        let mut console = String::new();
        let mut boot_time = None;
        let mut running = false;
        let mut output = String::new();
        let mut exit_code = None;
        let mut insmod_failed = None;
        let mut timed_out = false;
        loop {
            let now = Instant::now();
            if now >= deadline {
                timed_out = true;
                break;
            }
            match rx.recv_timeout(deadline - now) {
                Ok(line) => {
                    console.push_str(&line);
                    console.push('\n');
                    match line.find(mark).map(|at| line[at + mark.len()..].trim()) {
                        Some(m) if m.starts_with("up") && boot_time.is_none() => {
                            boot_time = Some(start.elapsed());
                        }
                        Some("run") => running = true,
                        Some(m) if m.starts_with("insmod-failed") => {
                            insmod_failed = Some(m["insmod-failed".len()..].trim().to_owned());
                        }
                        Some(m) if m.starts_with("exit ") => {
                            exit_code = m["exit ".len()..].trim().parse::<i32>().ok();
                            break;
                        }
                        _ if running => {
                            output.push_str(&line);
                            output.push('\n');
                        }
                        _ => {}
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    timed_out = true;
                    break;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        let total_time = start.elapsed();
        if exit_code.is_some() {
            // The guest powers itself off; give it a moment, then the drop
            // of `qemu` kills it by PID in any case.
            let _ = crate::wait_until(Duration::from_secs(10), "guest power-off", || {
                !qemu.is_running()
            });
        }
        drop(qemu);
        let _ = reader.join();
        let stderr = err_reader.join().unwrap_or_default();
        if !stderr.trim().is_empty() {
            console.push_str("--- qemu stderr ---\n");
            console.push_str(&stderr);
        }
        if timed_out {
            return Err(VmError::Timeout {
                after: self.timeout,
                accel,
                console,
            });
        }
        let Some(exit_code) = exit_code else {
            let reason = match (insmod_failed, boot_time) {
                (Some(m), _) => format!("insmod {m} failed"),
                (None, None) => "qemu exited before /init ran (kernel did not boot)".into(),
                (None, Some(_)) => "qemu exited before the command finished".into(),
            };
            return Err(VmError::Guest {
                accel,
                reason,
                console,
            });
        };
        Ok(VmRun {
            accel,
            accel_reason: reason.to_owned(),
            boot_time: boot_time.unwrap_or(total_time),
            total_time,
            exit_code,
            output,
            console,
            initramfs_bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_and_init_script() {
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
        let k = Kernel {
            root: PathBuf::from("/nonexistent"),
            image: PathBuf::from("/nonexistent/boot/vmlinuz-x"),
            release: "x".into(),
        };
        let vm = Vm::new(k.clone());
        let err = vm.init_script(&[], "tabby-vm:t").expect_err("no command");
        assert!(err.to_string().contains("command"), "{err}");
        let vm = Vm::new(k)
            .command(["/guest", "--case", "a'b"])
            .env("MODE", "ipip vm");
        let s = vm
            .init_script(&["tunnel4".into(), "ipip".into()], "tabby-vm:t")
            .expect("script");
        let tunnel4 = s
            .find("insmod /lib/modules/tabby-vm/tunnel4.ko")
            .expect("tunnel4");
        let ipip = s
            .find("insmod /lib/modules/tabby-vm/ipip.ko")
            .expect("ipip");
        assert!(tunnel4 < ipip);
        assert!(s.contains("export MODE='ipip vm'\n"), "{s}");
        assert!(s.contains(r"'/guest' '--case' 'a'\''b' </dev/null"), "{s}");
        assert!(s.ends_with("poweroff -f\n"));
        let bad = Vm::new(vm.kernel.clone()).command(["true"]).env("A B", "x");
        assert!(bad.init_script(&[], "tabby-vm:t").is_err());
        assert!(s.contains("echo \"tabby-vm:t exit $?\""), "{s}");
        assert_ne!(run_marker(), run_marker());
    }

    #[test]
    fn missing_kernel_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tmp");
        let err = Kernel::at(dir.path()).expect_err("empty dir");
        assert!(err.to_string().contains("install-deps.sh"), "{err}");
        std::fs::create_dir_all(dir.path().join("boot")).expect("boot");
        std::fs::write(dir.path().join("boot/vmlinuz-1.2.3"), b"").expect("image");
        assert!(Kernel::at(dir.path()).is_err(), "no modules dir");
        std::fs::create_dir_all(dir.path().join("lib/modules/1.2.3")).expect("mods");
        std::fs::write(
            dir.path().join("boot/config-1.2.3"),
            "CONFIG_NET_IPIP=m\n# CONFIG_X is not set\n",
        )
        .expect("config");
        let k = Kernel::at(dir.path()).expect("kernel");
        assert_eq!(k.release(), "1.2.3");
        assert_eq!(
            k.config("CONFIG_NET_IPIP").expect("cfg").as_deref(),
            Some("m")
        );
        assert_eq!(k.config("CONFIG_NET_IPI").expect("cfg"), None);
        assert_eq!(k.config("CONFIG_X").expect("cfg"), None);
    }
}
