//! Kubernetes' own e2e suite (`e2e.test` v1.20.2, built by `e2e/setup/build-kubernetes.sh
//! conformance`) run against a [`RealCluster`](super::RealCluster): the proof users believe.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{Error, io_error as io};

/// A binary of the conformance build (`e2e.test`, `agnhost`).
pub fn conformance_binary(name: &str) -> Result<PathBuf, Error> {
    crate::cached_dependency(
        &format!("kubernetes-v1.20.2-conformance/{name}"),
        "`e2e/setup/build-kubernetes.sh conformance` builds it",
    )
}

/// Which specs of the suite to run (ginkgo's regular expressions on the spec names).
#[derive(Debug, Clone)]
pub struct Selection {
    pub focus: String,
    pub skip: Option<String>,
}

/// What the suite reported.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SuiteReport {
    /// The specs that passed and failed, by name.
    pub passed: Vec<String>,
    pub failed: Vec<String>,
    /// The closing tally: specs selected, and those of them that ran to completion.
    pub total: usize,
    pub completed: usize,
    pub seconds: f64,
}

impl SuiteReport {
    /// Reads the JSON progress lines Kubernetes' e2e reporter prints (after ginkgo's own
    /// output on the same line, sometimes): `{"msg":"PASSED <spec>",...}`,
    /// `{"msg":"FAILED <spec>",...}` and the closing `{"msg":"Test Suite completed",
    /// "total":N,"completed":N,"skipped":N,"failed":N}`; `None` without the closing line.
    pub fn parse(output: &str) -> Option<Self> {
        let mut report = SuiteReport::default();
        let mut closed = false;
        for line in output.lines() {
            let Some(start) = line.find(r#"{"msg":"#) else {
                continue;
            };
            let Ok(progress) = serde_json::from_str::<serde_json::Value>(&line[start..]) else {
                continue;
            };
            let msg = progress["msg"].as_str().unwrap_or_default();
            let count = |field: &str| {
                progress[field]
                    .as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .unwrap_or(0)
            };
            if let Some(spec) = msg.strip_prefix("PASSED ") {
                report.passed.push(spec.to_owned());
            } else if let Some(spec) = msg.strip_prefix("FAILED ") {
                report.failed.push(spec.to_owned());
            } else if msg == "Test Suite completed" {
                report.total = count("total");
                report.completed = count("completed");
                closed = true;
            }
        }
        closed.then_some(report)
    }
}

/// Runs the selected specs serially with `kubeconfig`; the log goes to `log`.
pub fn run_suite(
    kubeconfig: &Path,
    selection: &Selection,
    report_dir: &Path,
    log: &Path,
) -> Result<SuiteReport, Error> {
    std::fs::create_dir_all(report_dir).map_err(io("create the report dir"))?;
    let mut command = Command::new(conformance_binary("e2e.test")?);
    command
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .arg(format!("--report-dir={}", report_dir.display()))
        .arg(format!("--ginkgo.focus={}", selection.focus))
        .args([
            "--provider=local",
            "--ginkgo.noColor",
            "--dump-logs-on-failure=false",
            // The nodes are kubelets in namespaces of this machine, not reachable by SSH.
            "--disable-log-dump",
        ]);
    if let Some(skip) = &selection.skip {
        command.arg(format!("--ginkgo.skip={skip}"));
    }
    let started = std::time::Instant::now();
    let output = command.output().map_err(io("run e2e.test"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::write(log, &text).map_err(io("write the e2e.test log"))?;
    let report = SuiteReport::parse(&text).map(|r| SuiteReport {
        seconds: started.elapsed().as_secs_f64(),
        ..r
    });
    report.ok_or_else(|| {
        let tail: Vec<&str> = text.lines().rev().take(30).collect();
        Error::Setup(format!(
            "e2e.test printed no summary ({}); its last lines:\n{}",
            output.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_e2e_reporters_progress_lines() {
        let output = r#"STEP: Destroying namespace
{"msg":"PASSED [sig-network] NetworkPolicy API should support creating NetworkPolicy API operations","total":2,"completed":1,"skipped":10,"failed":0}
SSSSSS{"msg":"FAILED [sig-network] NetworkPolicy [LinuxOnly] should allow egress access on one named port","total":2,"completed":1,"skipped":40,"failed":1}
JUnit report was created: /x/junit_01.xml
{"msg":"Test Suite completed","total":2,"completed":1,"skipped":5665,"failed":1}
"#;
        let report = SuiteReport::parse(output).expect("a closing line");
        assert_eq!(report.passed.len(), 1);
        assert_eq!(
            report.failed,
            [
                "[sig-network] NetworkPolicy [LinuxOnly] should allow egress access on one named port"
            ]
        );
        assert_eq!((report.total, report.completed), (2, 1));
        assert_eq!(SuiteReport::parse("panic: no kubeconfig\n"), None);
    }
}
