//! The VM harness against real qemu and Debian's kernel (unpacked by
//! scripts/install-deps.sh): a guest command's output and exit status come
//! back, modules load, and a guest that dies before reporting is an error.

use tabby_testbed::vm::{Kernel, Vm, VmError};

fn kernel() -> Kernel {
    Kernel::installed().expect("guest kernel (scripts/install-deps.sh unpacks it)")
}

#[test]
fn guest_command_output_exit_status_and_modules_come_back() {
    let run = Vm::new(kernel())
        .module("veth")
        .env("GREETING", "hello 'guest'")
        .command([
            "sh",
            "-c",
            "echo \"$GREETING from $(uname -r)\"; \
             grep -q '^veth ' /proc/modules && echo veth-loaded; exit 3",
        ])
        .run()
        .expect("the guest ran");
    println!(
        "accel {} ({}), boot {:.2?}, done {:.2?}",
        run.accel, run.accel_reason, run.boot_time, run.total_time
    );
    assert_eq!(run.exit_code, 3, "{}", run.console);
    assert!(!run.success());
    let lines: Vec<&str> = run.output.lines().collect();
    assert!(
        lines.iter().any(|l| l.starts_with("hello 'guest' from 6.")),
        "{}",
        run.console
    );
    assert!(lines.contains(&"veth-loaded"), "{}", run.console);
    assert!(run.boot_time <= run.total_time);
}

#[test]
fn a_guest_that_dies_before_reporting_is_an_error() {
    // The command powers the machine off itself: no exit marker.
    let err = Vm::new(kernel())
        .command(["poweroff", "-f"])
        .run()
        .expect_err("no exit status was reported");
    assert!(
        matches!(&err, VmError::Guest { reason, .. } if reason.contains("before the command finished")),
        "{err}"
    );
}

#[test]
fn bad_requests_fail_before_booting() {
    let err = Vm::new(kernel())
        .module("no_such_module_here")
        .command(["true"])
        .run()
        .expect_err("unknown module");
    assert!(
        matches!(&err, VmError::Module { name, .. } if name == "no_such_module_here"),
        "{err}"
    );
    let err = Vm::new(kernel()).run().expect_err("no command");
    assert!(err.to_string().contains("command"), "{err}");
    let err = Vm::new(kernel())
        .program("/nonexistent/program", "/bin/x")
        .command(["x"])
        .run()
        .expect_err("missing program");
    assert!(err.to_string().contains("/nonexistent/program"), "{err}");
}
