//! Text output, calicoctl style: short and concrete, problems first, each
//! with its `why:` and `fix:` lines; then what was checked and fine, and
//! what could not be checked.

use std::fmt::Write;

use crate::finding::{Finding, Report, Severity, Status, Unavailable};
use crate::route::{RouteReport, StepStatus};

fn finding(out: &mut String, f: &Finding) {
    let _ = writeln!(out, "{:<6} {}", f.severity.label(), f.subject);
    let _ = writeln!(out, "       {}", f.problem);
    let _ = writeln!(out, "       why: {}", f.cause);
    let _ = writeln!(out, "       fix: {}", f.fix);
}

fn unchecked(out: &mut String, u: &[Unavailable]) {
    if u.is_empty() {
        return;
    }
    let _ = writeln!(out, "\nCould not check:");
    for u in u {
        let _ = writeln!(
            out,
            "  {} ({}): {}\n    {}",
            u.part, u.source, u.reason, u.hint
        );
    }
}

fn count(findings: &[Finding], s: Severity) -> usize {
    findings.iter().filter(|f| f.severity == s).count()
}

/// The whole-node report as text.
pub fn report(r: &Report) -> String {
    let mut out = String::new();
    let errors = count(&r.findings, Severity::Error);
    let warnings = count(&r.findings, Severity::Warning);
    let headline = match r.status {
        Status::Healthy => "no problem found".to_owned(),
        Status::Problems => format!(
            "{} problem{} found ({errors} error{}, {warnings} warning{})",
            errors + warnings,
            if errors + warnings == 1 { "" } else { "s" },
            if errors == 1 { "" } else { "s" },
            if warnings == 1 { "" } else { "s" },
        ),
        Status::Incomplete => "no problem found in what could be checked".to_owned(),
    };
    let _ = writeln!(out, "Node {}: {headline}", r.node);
    for f in &r.findings {
        out.push('\n');
        finding(&mut out, f);
    }
    if !r.passed.is_empty() {
        let _ = writeln!(out, "\nChecked and fine:");
        for p in &r.passed {
            let _ = writeln!(out, "  {p}");
        }
    }
    unchecked(&mut out, &r.unchecked);
    out
}

/// The `--route` explanation as text.
pub fn route(r: &RouteReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Route to {} on node {}", r.target, r.node);
    for s in &r.trace {
        let status = match s.status {
            StepStatus::Ok => "ok",
            StepStatus::Problem => "PROBLEM",
            StepStatus::Note => "-",
        };
        let _ = writeln!(out, "  {status:<8} {:<10} {}", s.stage, s.text);
    }
    let _ = writeln!(out, "Verdict: {}", r.verdict);
    for f in &r.findings {
        out.push('\n');
        finding(&mut out, f);
    }
    unchecked(&mut out, &r.unchecked);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::{diagnose, tests::healthy};
    use crate::route::explain_route;

    #[test]
    fn text_shows_problems_with_why_and_fix() {
        let mut s = healthy();
        if let Ok(sys) = &mut s.sysctls {
            sys.ipv4_forward = Some(false);
        }
        let t = report(&diagnose(&s));
        assert!(
            t.starts_with("Node a: 1 problem found (1 error, 0 warnings)\n"),
            "{t}"
        );
        assert!(t.contains("ERROR  sysctl net.ipv4.ip_forward\n"), "{t}");
        assert!(
            t.contains("       fix: sysctl -w net.ipv4.ip_forward=1"),
            "{t}"
        );
        let t = report(&diagnose(&healthy()));
        assert!(t.starts_with("Node a: no problem found\n"), "{t}");
        assert!(t.contains("Checked and fine:\n"), "{t}");
    }

    #[test]
    fn route_text_has_one_line_per_step() {
        let r = explain_route(&healthy(), &"10.244.2.0/26".parse().expect("target"));
        let t = route(&r);
        assert!(
            t.contains("  ok       pool       IPPool pods (10.244.0.0/16)\n"),
            "{t}"
        );
        assert!(t.contains("Verdict: node a routes 10.244.2.0/26"), "{t}");
    }
}
