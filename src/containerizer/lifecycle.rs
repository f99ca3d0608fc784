//! Pure guards on the runtime's status: which verbs make sense in which
//! state. Verbs check these before touching anything.

use crate::runtime::Status;

/// A process can be run only while init runs.
pub fn can_exec(status: Option<Status>) -> bool {
    status == Some(Status::Running)
}

/// Stopping user processes needs a running (or paused) container.
pub fn can_stop(status: Option<Status>) -> bool {
    matches!(status, Some(Status::Running | Status::Paused))
}

/// The runtime's container must be killed before `delete` without force.
pub fn needs_kill(status: Option<Status>) -> bool {
    matches!(
        status,
        Some(Status::Running | Status::Paused | Status::Creating)
    )
}

/// A paused container must be thawed for signals to take effect.
pub fn needs_thaw(status: Option<Status>) -> bool {
    status == Some(Status::Paused)
}

/// The runtime knows the container, so destroy must `delete` it.
pub fn needs_delete(status: Option<Status>) -> bool {
    status.is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Option<Status>; 6] = [
        None,
        Some(Status::Creating),
        Some(Status::Created),
        Some(Status::Running),
        Some(Status::Paused),
        Some(Status::Stopped),
    ];

    #[test]
    fn guards() {
        let table: Vec<_> = ALL
            .iter()
            .map(|s| {
                (
                    can_exec(*s),
                    can_stop(*s),
                    needs_kill(*s),
                    needs_thaw(*s),
                    needs_delete(*s),
                )
            })
            .collect();
        assert_eq!(
            table,
            vec![
                (false, false, false, false, false),
                (false, false, true, false, true),
                (false, false, false, false, true),
                (true, true, true, false, true),
                (false, true, true, true, true),
                (false, false, false, false, true),
            ]
        );
    }
}
