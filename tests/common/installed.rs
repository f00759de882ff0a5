//! Whether a program the tests run is on the machine: without it the tests that need it
//! are skipped with a message — except under `CI=true`, where that is a failure
//! (`scripts/test.sh` installs what they need).

use std::process::{Command, Stdio};

/// Whether `program --version` runs; panics under `CI=true` when it does not.
pub(crate) fn installed(program: &str) -> bool {
    let found = Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{program} is not installed, and CI=true makes that a failure (scripts/test.sh installs it)"
        );
        eprintln!("skipped: {program} is not installed (scripts/test.sh installs it)");
    }
    found
}
