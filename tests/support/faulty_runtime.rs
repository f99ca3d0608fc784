//! A faulty OCI runtime for tests: a bash script, generated here, that
//! stands in for runc (pass its path as the agent's `--runtime`, or as the
//! binary of a `RuntimeConfig`) and runs the real runtime, except where a
//! rule says to fail before the work, fail after it, or hang.
//!
//! Rules are per verb (`create`, `start`, `exec`, `delete`, `kill`,
//! `state`, ... or `*`), per container id (a bash glob, `*` for all), with
//! a seeded probability and an optional cap on how often each fires per id.
//! The dice are deterministic: a roll is a hash of (seed, rule, verb, id,
//! how many times this verb was called for this id), so a seed replays the
//! same faults for the same sequence of calls. Rules live in a file the
//! script reads on every call, so a test can change them on the fly (e.g.
//! [`FaultyRuntime::clear`] to let things converge before checking).
//!
//! Usable from any test crate: `#[path = "support/faulty_runtime.rs"] mod
//! faulty_runtime;`. It depends on nothing but std.

#![allow(dead_code)]

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// What a rule does to a call it picks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Exit 1 without running the real runtime (an error in the runtime's
    /// `--log` file and on stderr, as runc reports its own).
    FailBefore,
    /// Run the real runtime, then exit 1 whatever it did.
    FailAfter,
    /// Sleep without running the real runtime, then fail as `FailBefore`
    /// (the caller's timeout should end it first: kill the process group,
    /// as the agent does, or the `sleep` outlives the script).
    Hang,
    /// Run the real runtime, then sleep, then exit with its status.
    HangAfter,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::FailBefore => "fail-before",
            Mode::FailAfter => "fail-after",
            Mode::Hang => "hang",
            Mode::HangAfter => "hang-after",
        })
    }
}

/// One rule. The first rule (in order) that matches a call and wins its
/// roll decides what happens to it; without one the real runtime runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    /// The verb (`exec`, `create`, ...) or `*`.
    pub verb: String,
    /// A bash glob on the container id.
    pub id: String,
    /// What to do.
    pub mode: Mode,
    /// Chance that a matching call is picked, in [0, 1].
    pub probability: f64,
    /// Fire at most this many times per id; 0 for no limit.
    pub times: u32,
    /// How long a hang lasts, in seconds.
    pub hang_secs: u32,
}

impl Fault {
    /// Every call of `verb` (or `*`), every id, always, no limit.
    pub fn new(verb: &str, mode: Mode) -> Self {
        Fault {
            verb: verb.to_string(),
            id: "*".to_string(),
            mode,
            probability: 1.0,
            times: 0,
            hang_secs: 3600,
        }
    }

    /// Only ids matching the glob `id`.
    pub fn id(mut self, id: &str) -> Self {
        self.id = id.to_string();
        self
    }

    /// Pick a matching call with probability `p` (seeded).
    pub fn probability(mut self, p: f64) -> Self {
        self.probability = p.clamp(0.0, 1.0);
        self
    }

    /// Fire at most `n` times per id (1: once per id).
    pub fn times(mut self, n: u32) -> Self {
        self.times = n;
        self
    }

    /// Hang for `secs` seconds.
    pub fn hang_secs(mut self, secs: u32) -> Self {
        self.hang_secs = secs;
        self
    }

    fn line(&self) -> String {
        let permille = (self.probability * 1000.0).round() as u32;
        format!(
            "{} {} {} {} {} {}",
            self.verb, self.id, self.mode, permille, self.times, self.hang_secs
        )
    }
}

/// One call of the wrapper, or one fault it injected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// The verb.
    pub verb: String,
    /// The container id (empty for `list`).
    pub id: String,
    /// Which call of this verb for this id it was, from 1.
    pub n: u32,
    /// The fault injected (`fail-after`, ...); `None` in [`FaultyRuntime::calls`].
    pub mode: Option<String>,
}

/// A generated faulty runtime in its own directory.
pub struct FaultyRuntime {
    dir: PathBuf,
    script: PathBuf,
}

impl FaultyRuntime {
    /// Write the wrapper into `dir` (made if missing), over the real
    /// runtime `real` (e.g. `runc`, looked up on PATH, or a path), with
    /// `seed` for the dice and `faults` as its first rules.
    pub fn new(dir: &Path, real: &str, seed: u64, faults: &[Fault]) -> Self {
        for sub in ["calls", "fired"] {
            std::fs::create_dir_all(dir.join(sub)).expect("making the faulty runtime's dir");
        }
        let real = which(real);
        let script = dir.join("faulty-runtime");
        let text = SCRIPT
            .replace("@REAL@", &quote(&real.to_string_lossy()))
            .replace("@DIR@", &quote(&dir.to_string_lossy()))
            .replace("@SEED@", &seed.to_string());
        std::fs::write(&script, text).expect("writing the faulty runtime");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
            .expect("chmod of the faulty runtime");
        let me = FaultyRuntime {
            dir: dir.to_path_buf(),
            script,
        };
        me.set(faults);
        me
    }

    /// The script: what to pass as the runtime binary.
    pub fn path(&self) -> &Path {
        &self.script
    }

    /// Replace the rules (atomically: a call sees the old or the new set).
    pub fn set(&self, faults: &[Fault]) {
        let text: String = faults.iter().map(|f| f.line() + "\n").collect();
        let tmp = self.dir.join(".faults.tmp");
        std::fs::write(&tmp, text).expect("writing the fault rules");
        std::fs::rename(&tmp, self.dir.join("faults")).expect("renaming the fault rules");
    }

    /// No more faults: every call runs the real runtime.
    pub fn clear(&self) {
        self.set(&[]);
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        read_calls(&self.dir.join("calls.log"))
    }

    /// Every fault injected so far, in order.
    pub fn injected(&self) -> Vec<Call> {
        read_calls(&self.dir.join("injected.log"))
    }
}

/// Lines of `verb id n [mode]`.
fn read_calls(path: &Path) -> Vec<Call> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut w = l.split(' ');
            Some(Call {
                verb: w.next()?.to_string(),
                id: w.next()?.to_string(),
                n: w.next()?.parse().ok()?,
                mode: w.next().map(str::to_string),
            })
        })
        .collect()
}

/// `name` on PATH, or `name` itself when it has a slash or is not found.
fn which(name: &str) -> PathBuf {
    if name.contains('/') {
        return PathBuf::from(name);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}

/// Single-quoted for bash.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The wrapper. It finds the verb after the global flags and the id (the
/// last word; for `kill`, the first word after the verb that is not a
/// flag), counts the call, and takes the first rule that matches and wins
/// its roll. Counting and firing happen under a lock on `lock`.
const SCRIPT: &str = r#"#!/bin/bash
# Generated by tests/support/faulty_runtime.rs: the real runtime, with faults.
real=@REAL@
dir=@DIR@
seed=@SEED@
argv=("$@")
n=${#argv[@]}
verb= id= logfile= i=0
while (( i < n )); do
  case ${argv[i]} in
    --log) logfile=${argv[i+1]}; i=$((i + 2)) ;;
    --root|--log-format|--criu) i=$((i + 2)) ;;
    -*) i=$((i + 1)) ;;
    *) verb=${argv[i]}; break ;;
  esac
done
if [[ $verb == kill ]]; then
  for ((j = i + 1; j < n; j++)); do
    if [[ ${argv[j]} != -* ]]; then id=${argv[j]}; break; fi
  done
elif (( i + 1 < n )); then
  id=${argv[n-1]}
fi
safe=${id//[^A-Za-z0-9._-]/_}
action= hang=0
exec 9>>"$dir/lock"
flock 9
k=$(( $(cat "$dir/calls/$verb.$safe" 2>/dev/null || echo 0) + 1 ))
echo "$k" > "$dir/calls/$verb.$safe"
echo "$verb $id $k" >> "$dir/calls.log"
rule=0
while read -r rverb rid rmode rpermille rtimes rhang; do
  rule=$((rule + 1))
  [[ $rverb == "*" || $rverb == "$verb" ]] || continue
  [[ $id == $rid ]] || continue
  fired="$dir/fired/$rule.$verb.$safe"
  f=$(cat "$fired" 2>/dev/null || echo 0)
  if (( rtimes > 0 && f >= rtimes )); then continue; fi
  roll=$(( 16#$(printf '%s' "$seed $rule $verb $id $k" | sha256sum | cut -c1-8) % 1000 ))
  (( roll < rpermille )) || continue
  echo $((f + 1)) > "$fired"
  echo "$verb $id $k $rmode" >> "$dir/injected.log"
  action=$rmode hang=$rhang
  break
done < <(cat "$dir/faults" 2>/dev/null)
exec 9>&-
fail() {
  local msg="faulty runtime: injected $action of $verb $id (call $k)"
  if [[ -n $logfile ]]; then
    printf '{"level":"error","msg":"%s","time":"%s"}\n' "$msg" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >> "$logfile"
  fi
  echo "$msg" >&2
  exit 1
}
case $action in
  fail-before) fail ;;
  hang) sleep "$hang"; fail ;;
  fail-after) "$real" "$@"; fail ;;
  hang-after) "$real" "$@"; status=$?; sleep "$hang"; exit $status ;;
  *) exec "$real" "$@" ;;
esac
"#;
