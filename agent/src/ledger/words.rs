//! The outcomes the ledger stores as words: each an enum for the code that matches on it, and a
//! stable lowercase word in the database and in every JSON answer. Only the ledger turns one into
//! the other ([`stored_words!`]), so a word read back that no variant has is damage, said as such.

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};

/// Declares an enum stored as one word per variant: `as_str`, `Display`, `Serialize` as the word,
/// its JSON schema (one of the words), and rusqlite's `ToSql` and `FromSql` through the same
/// words.
macro_rules! stored_words {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $word:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $word)] $variant,)+
        }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $word,)+
                }
            }

            fn from_word(word: &str) -> Option<Self> {
                match word {
                    $($word => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl schemars::JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }

            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({ "type": "string", "enum": [$($word),+] })
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.as_str()))
            }
        }

        impl FromSql for $name {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                let word = value.as_str()?;
                $name::from_word(word).ok_or_else(|| {
                    FromSqlError::Other(
                        format!(
                            "the state database holds {word:?}, which is no {} this agent \
                             writes: it was written by a newer agent (run that one) or changed \
                             by hand (`cc-ci-agent state status` checks it)",
                            stringify!($name)
                        )
                        .into(),
                    )
                })
            }
        }
    };
}

stored_words! {
    /// How far a deploy has come (the deploy journal's `state` column), in the order of the
    /// happy path. A word no variant has is an error, never `finished`: that would take the row
    /// out of the dead-man switch's unconfirmed set.
    Stage {
        Preflight => "preflight",
        Building => "building",
        Armed => "armed",
        Activating => "activating",
        Verifying => "verifying",
        Committing => "committing",
        RollingBack => "rolling-back",
        Finished => "finished",
    }
}

stored_words! {
    /// How a CI run of a recipe's release ended, judged tier by tier (or by its exit code).
    RunResult {
        /// Started, not finished (or interrupted before the next run found it).
        Running => "running",
        Green => "green",
        Red => "red",
        /// No judgement: the results could not be read, or the agent stopped during the run.
        Error => "error",
    }
}

stored_words! {
    /// How a probe ended.
    ProbeOutcome {
        /// All three stages happened: the recipe is triggerable.
        Proven => "proven",
        /// A stage did not happen within the timeout; `stopped_at` names it.
        Stopped => "stopped",
        /// CI was busy: not probed, not judged.
        Deferred => "deferred",
        /// The probe could not be made (the forge refused, a push failed): nothing is known.
        Failed => "failed",
        /// The agent stopped mid-probe (a signal, `kill -9`, a crash): found by the next run.
        Interrupted => "interrupted",
    }
}

stored_words! {
    /// How a sweep ended.
    SweepOutcome {
        Done => "done",
        Failed => "failed",
        /// Another job held the host lock.
        RefusedBusy => "refused-busy",
        /// CI was busy with other work.
        RefusedCiBusy => "refused-ci-busy",
    }
}

stored_words! {
    /// How a gc run ended.
    GcOutcome {
        /// Within budget and free space.
        Ok => "ok",
        /// Still over budget or under free space after every allowed deletion.
        Short => "short",
        SomeFailed => "some-failed",
        Failed => "failed",
        RefusedBusy => "refused-busy",
    }
}

stored_words! {
    /// One recipe's last mirror sync.
    MirrorResult {
        Created => "created",
        Synced => "synced",
        InSync => "in-sync",
        Failed => "failed",
    }
}

stored_words! {
    /// One warm volume's deletion, recorded as `Deleting` before the volume is touched.
    DeletionState {
        Deleting => "deleting",
        Deleted => "deleted",
        /// Found in use at the last moment: left alone.
        Kept => "kept",
        Failed => "failed",
    }
}

impl SweepOutcome {
    /// Refused before it began: nothing was judged.
    pub fn is_refusal(self) -> bool {
        matches!(
            self,
            SweepOutcome::RefusedBusy | SweepOutcome::RefusedCiBusy
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_word_reads_back_as_its_variant_and_an_unknown_word_is_an_error() {
        let conn = rusqlite::Connection::open_in_memory().unwrap_or_else(|e| panic!("{e}"));
        for r in [
            RunResult::Running,
            RunResult::Green,
            RunResult::Red,
            RunResult::Error,
        ] {
            let back: RunResult = conn
                .query_row("SELECT ?1", [r], |row| row.get(0))
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(back, r);
            assert_eq!(
                serde_json::to_value(r).ok(),
                Some(serde_json::Value::from(r.as_str()))
            );
        }
        let odd: rusqlite::Result<SweepOutcome> =
            conn.query_row("SELECT 'sideways'", [], |row| row.get(0));
        assert!(odd.is_err());
        assert_eq!(SweepOutcome::RefusedCiBusy.to_string(), "refused-ci-busy");
        assert!(SweepOutcome::RefusedBusy.is_refusal() && !SweepOutcome::Failed.is_refusal());
    }
}
