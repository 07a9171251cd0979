//! The wire's enums for people: each state's lower-case name (`JOB_STATE_SUCCEEDED` →
//! `succeeded`), used by the CLI's tables and, through the `serialize_with` functions, by every
//! JSON view, so `--json` and `/api/` print `"state": "succeeded"` rather than a number.

use crate::pb::{AttemptOutcome, Disposition, JobState, StageState, TaskState};

/// A wire enum's name for people.
pub trait Named: Copy {
    fn name(self) -> &'static str;
}

macro_rules! named {
    ($ty:ident, $ser:ident, { $($variant:ident => $name:literal),* $(,)? }) => {
        impl Named for $ty {
            fn name(self) -> &'static str {
                match self {
                    $($ty::$variant => $name,)*
                }
            }
        }

        /// Serializes the `i32` prost keeps for this enum as its name (unknown values as
        /// `unknown(N)`, so a newer peer's states still print).
        pub fn $ser<S: serde::Serializer>(value: &i32, s: S) -> Result<S::Ok, S::Error> {
            match $ty::try_from(*value) {
                Ok(v) => s.serialize_str(v.name()),
                Err(_) => s.serialize_str(&format!("unknown({value})")),
            }
        }
    };
}

named!(JobState, job_state, {
    Unspecified => "unspecified",
    Running => "running",
    Finalizing => "finalizing",
    Succeeded => "succeeded",
    Failed => "failed",
    Cancelled => "cancelled",
});

named!(StageState, stage_state, {
    Unspecified => "unspecified",
    Waiting => "waiting",
    Running => "running",
    Succeeded => "succeeded",
    Failed => "failed",
    Cancelled => "cancelled",
});

named!(TaskState, task_state, {
    Unspecified => "unspecified",
    Queued => "queued",
    Leased => "leased",
    Committed => "committed",
    Failed => "failed",
    Cancelled => "cancelled",
});

named!(AttemptOutcome, attempt_outcome, {
    Unspecified => "unspecified",
    Running => "running",
    Committed => "committed",
    Duplicate => "duplicate",
    Failed => "failed",
    Expired => "expired",
    Cancelled => "cancelled",
    Aborted => "aborted",
});

named!(Disposition, disposition, {
    Unspecified => "unspecified",
    Committed => "committed",
    Duplicate => "duplicate",
    Stale => "stale",
    FailureRecorded => "failure_recorded",
});

impl JobState {
    /// Whether the job has ended (succeeded, failed or cancelled).
    pub fn is_terminal(self) -> bool {
        matches!(self, JobState::Succeeded | JobState::Failed | JobState::Cancelled)
    }
}

impl AttemptOutcome {
    /// The outcome an attempt record names (the coordinator's durable state keeps names).
    pub fn from_name(name: &str) -> Self {
        match name {
            "running" => AttemptOutcome::Running,
            "committed" => AttemptOutcome::Committed,
            "duplicate" => AttemptOutcome::Duplicate,
            "failed" => AttemptOutcome::Failed,
            "expired" => AttemptOutcome::Expired,
            "cancelled" => AttemptOutcome::Cancelled,
            "aborted" => AttemptOutcome::Aborted,
            _ => AttemptOutcome::Unspecified,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::{JobStatus, TaskStatus};

    #[test]
    fn json_views_print_names() {
        let job = JobStatus { state: JobState::Succeeded as i32, ..Default::default() };
        let v = serde_json::to_value(&job).unwrap();
        assert_eq!(v["state"], "succeeded");
        let task = TaskStatus { state: 42, ..Default::default() };
        assert_eq!(serde_json::to_value(&task).unwrap()["state"], "unknown(42)");
        for o in ["running", "committed", "duplicate", "failed", "expired", "cancelled", "aborted"] {
            assert_eq!(AttemptOutcome::from_name(o).name(), o);
        }
        assert_eq!(AttemptOutcome::from_name("weird"), AttemptOutcome::Unspecified);
    }
}
