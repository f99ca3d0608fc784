//! Running the operator verbs (`rundmc ps`, `logs`, `exec`, ...) against a
//! test agent's API socket, as a user would from a shell.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use crate::support::agent::AgentEnv;
use crate::support::binary;

/// The agent's API socket in this environment (`<state-dir>/rundmc.sock`).
pub fn socket(a: &AgentEnv) -> PathBuf {
    a.state.join("rundmc.sock")
}

/// `rundmc ARGS...` against `a`'s agent, ready to run.
pub fn command(a: &AgentEnv, args: &[&str]) -> Command {
    let mut c = Command::new(binary("rundmc"));
    c.args(args)
        .env("RUNDMC_API_SOCKET", socket(a))
        .env_remove("NO_COLOR")
        .stdin(Stdio::null());
    c
}

/// Run `rundmc ARGS...` to the end: (exit code, stdout, stderr).
pub fn run(a: &AgentEnv, args: &[&str]) -> (i32, String, String) {
    let out: Output = command(a, args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
