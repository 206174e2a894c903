//! The store's one error type. Every message names the file and says what to do about it.

use std::path::PathBuf;

/// Advice closing every message about a damaged or foreign file.
const MOVE_ASIDE: &str = "restore it from a backup, or move it aside to start with an empty store \
                          (Tern never deletes data on its own)";

/// Why the store could not open, load or commit.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The data directory or its file could not be created or read.
    #[error(
        "cannot use the store at {path}: {source}; check that the directory exists, is writable \
         by Tern and that the disk has space"
    )]
    Io {
        /// The directory or file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// Another process holds the store open.
    #[error(
        "the store at {path} is already open in another process; stop the other Tern (or point \
         this one at a different data directory)"
    )]
    Locked {
        /// The database file.
        path: PathBuf,
    },
    /// The file is not a database this build can open (damaged, truncated, or not a Tern store).
    #[error(
        "cannot open the store at {path}: {reason}; the file is damaged or not a Tern store: {MOVE_ASIDE}"
    )]
    Unreadable {
        /// The database file.
        path: PathBuf,
        /// What the engine reported.
        reason: String,
    },
    /// The store was written in a different format version.
    #[error(
        "the store at {path} has format `{found}`, this Tern reads `{expected}`; run the Tern \
         release that wrote it, or {MOVE_ASIDE}"
    )]
    Version {
        /// The database file.
        path: PathBuf,
        /// The format found, or a description of its absence.
        found: String,
        /// The format this build reads.
        expected: &'static str,
    },
    /// A stored value or key does not decode.
    #[error(
        "the store at {path} holds a bad entry in table `{table}` (key {key}): {reason}; the file \
         is damaged or was written by another Tern release: {MOVE_ASIDE}"
    )]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// The table holding the entry.
        table: &'static str,
        /// The entry's key, printably.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The engine failed while reading or writing; a failed commit applied nothing.
    #[error(
        "the store at {path} failed to {op}: {reason}; nothing of this operation was applied; \
         check the disk (space, permissions, health) and restart Tern"
    )]
    Engine {
        /// The database file.
        path: PathBuf,
        /// What the store was doing.
        op: &'static str,
        /// What the engine reported.
        reason: String,
    },
    /// A commit asked for something inconsistent; it was refused whole.
    #[error(
        "the store at {path} refused a commit: {reason}; nothing of it was applied; this is a \
         bug in Tern, please report it with this message"
    )]
    Invalid {
        /// The database file (or `(memory)`).
        path: PathBuf,
        /// What was inconsistent.
        reason: String,
    },
}
