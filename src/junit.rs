//! JUnit XML of image tests, the format CI servers show in their test tabs
//! (GitLab's `artifacts:reports:junit`, Jenkins, GitHub actions' reporters).
//! One `<testsuite>` per layer, one `<testcase>` per test command. Pure text;
//! the commands write the file.

use crate::executor::TestOutcome;

/// The tests of one layer: its suite is named `LABEL` or `LABEL@SYSTEM`.
pub struct Suite<'a> {
    pub label: &'a str,
    pub system: Option<&'a str>,
    pub tests: &'a [TestOutcome],
}

/// The JUnit XML document of `suites` (an empty `<testsuites/>` when none
/// ran, so a CI report step always finds a valid file).
pub fn render(suites: &[Suite<'_>]) -> String {
    let failures = |t: &[TestOutcome]| t.iter().filter(|o| !o.passed).count();
    let seconds = |t: &[TestOutcome]| t.iter().map(|o| o.duration_ms).sum::<u64>() as f64 / 1000.0;
    let all: Vec<TestOutcome> = suites.iter().flat_map(|s| s.tests.to_vec()).collect();
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    x.push_str(&format!(
        "<testsuites name=\"layerbuild image tests\" tests=\"{}\" failures=\"{}\" time=\"{:.3}\">\n",
        all.len(),
        failures(&all),
        seconds(&all)
    ));
    for s in suites {
        let name = match s.system {
            Some(sys) => format!("{}@{sys}", s.label),
            None => s.label.to_string(),
        };
        x.push_str(&format!(
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"0\" time=\"{:.3}\">\n",
            escape(&name),
            s.tests.len(),
            failures(s.tests),
            seconds(s.tests)
        ));
        for t in s.tests {
            x.push_str(&format!(
                "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\">\n",
                escape(&name),
                escape(&t.command),
                t.duration_ms as f64 / 1000.0
            ));
            if !t.passed {
                let message = t.error.as_deref().unwrap_or("failed");
                x.push_str(&format!(
                    "      <failure message=\"{}\">{}</failure>\n",
                    escape(message),
                    escape(&t.output)
                ));
            } else if !t.output.is_empty() {
                x.push_str(&format!(
                    "      <system-out>{}</system-out>\n",
                    escape(&t.output)
                ));
            }
            x.push_str("    </testcase>\n");
        }
        x.push_str("  </testsuite>\n");
    }
    x.push_str("</testsuites>\n");
    x
}

/// Text as XML character data or an attribute value: markup characters
/// escaped; characters XML 1.0 forbids (terminal escapes, other control
/// characters) replaced by U+FFFD.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(command: &str, passed: bool, output: &str) -> TestOutcome {
        TestOutcome {
            command: command.into(),
            passed,
            error: (!passed).then(|| "exit status: 1".into()),
            output: output.into(),
            duration_ms: 1500,
        }
    }

    #[test]
    fn a_suite_per_layer_a_case_per_command_failures_with_their_output() {
        let slurm = [
            outcome("test -x /usr/sbin/slurmd", true, ""),
            outcome(
                "grep -q 'a<b' /etc/x && echo \"&\"",
                false,
                "no\x1b[31m match",
            ),
        ];
        let x = render(&[
            Suite {
                label: "//compute/slurm",
                system: Some("clusterA"),
                tests: &slurm,
            },
            Suite {
                label: "//base/os",
                system: None,
                tests: &[],
            },
        ]);
        assert!(x.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"));
        assert!(x.contains(
            "<testsuites name=\"layerbuild image tests\" tests=\"2\" failures=\"1\" time=\"3.000\">"
        ));
        assert!(x.contains(
            "<testsuite name=\"//compute/slurm@clusterA\" tests=\"2\" failures=\"1\" errors=\"0\" time=\"3.000\">"
        ));
        assert!(x.contains(
            "<testcase classname=\"//compute/slurm@clusterA\" name=\"test -x /usr/sbin/slurmd\" time=\"1.500\">\n    </testcase>"
        ));
        assert!(x.contains(
            "name=\"grep -q &apos;a&lt;b&apos; /etc/x &amp;&amp; echo &quot;&amp;&quot;\""
        ));
        assert!(x.contains("<failure message=\"exit status: 1\">no\u{fffd}[31m match</failure>"));
        assert!(x.contains("<testsuite name=\"//base/os\" tests=\"0\" failures=\"0\""));
        assert!(x.ends_with("</testsuites>\n"));
    }

    #[test]
    fn no_suites_is_still_a_document() {
        assert_eq!(
            render(&[]),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"layerbuild image tests\" tests=\"0\" failures=\"0\" time=\"0.000\">\n</testsuites>\n"
        );
    }
}
