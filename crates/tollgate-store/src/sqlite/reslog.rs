//! The reservation log: how the embedded store makes a reservation durable
//! before its request is forwarded, with one `write` and no thread hop.
//!
//! A reservation is one JSON line appended to the current generation file
//! (`<db>-reservations.<n>`); the request task writes it itself. Like a
//! SQLite WAL commit under `synchronous=NORMAL`, a completed `write` is in
//! the OS page cache: it survives a crash of this process, not a power
//! loss. It is closed by its settlement's SQLite transaction (the record's
//! `request_id` is the reservation id) or by a release line (`x`) appended
//! to the same file. A generation file is deleted once every reservation
//! in it is closed durably, so the log stays a few megabytes.
//!
//! At start-up every file is read: a reservation with neither a release
//! line nor a stored record is still open, and is charged by
//! reconciliation (whose settlements then delete the files).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use tollgate_core::ledger::Amount;

use crate::journal::{OpenReservation, Payload};
use crate::{Result, StoreError};

/// A new generation starts past this size.
const ROTATE_BYTES: u64 = 4 << 20;

#[derive(Serialize, Deserialize)]
#[serde(tag = "t")]
enum Line {
    #[serde(rename = "r")]
    Reserve {
        id: String,
        charges: Vec<String>,
        amount: Amount,
        expires_at: i64,
        /// Named for what it held before payloads had kinds.
        template: Payload,
    },
    #[serde(rename = "x")]
    Release { id: String },
}

/// [`Line::Reserve`] by reference: written on every request, so no copy.
#[derive(Serialize)]
struct ReserveLine<'a> {
    t: &'static str,
    id: &'a str,
    charges: &'a [String],
    amount: Amount,
    expires_at: i64,
    template: &'a Payload,
}

struct State {
    current: u64,
    bytes: u64,
    /// One append handle per generation still on disk.
    files: BTreeMap<u64, File>,
    /// Reservations not yet closed durably, and the generation holding each.
    open: HashMap<String, u64>,
    /// Open reservations per generation on disk.
    counts: BTreeMap<u64, usize>,
    /// This process appends (a gateway), rather than only reading.
    writing: bool,
}

pub(super) struct ReservationLog {
    base: PathBuf,
    state: Mutex<State>,
}

fn io(path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Io(format!("reservation log {}: {e}", path.display()))
}

impl ReservationLog {
    /// Opens the log next to the database at `db`, reading what a previous
    /// process left: the reservations it left open (`is_settled` tells
    /// which have a stored record) — they stay counted until closed.
    pub(super) fn open(
        db: &Path,
        is_settled: impl Fn(&str) -> Result<bool>,
    ) -> Result<(ReservationLog, Vec<OpenReservation>)> {
        let name = db
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "tollgate.db".into());
        let base = db.with_file_name(format!("{name}-reservations"));
        let mut gens = Vec::new();
        if let Some(dir) = base.parent().filter(|d| !d.as_os_str().is_empty()) {
            let prefix = format!("{name}-reservations.");
            for entry in std::fs::read_dir(dir).map_err(|e| io(dir, e))? {
                let entry = entry.map_err(|e| io(dir, e))?;
                let file = entry.file_name().to_string_lossy().into_owned();
                if let Some(g) = file
                    .strip_prefix(&prefix)
                    .and_then(|g| g.parse::<u64>().ok())
                {
                    gens.push(g);
                }
            }
        }
        gens.sort_unstable();
        let mut reserved: Vec<(u64, OpenReservation)> = Vec::new();
        let mut released: HashSet<String> = HashSet::new();
        for &g in &gens {
            let path = generation(&base, g);
            let file = File::open(&path).map_err(|e| io(&path, e))?;
            let lines = BufReader::new(file)
                .lines()
                .collect::<std::io::Result<Vec<String>>>()
                .map_err(|e| io(&path, e))?;
            let last = lines.len().saturating_sub(1);
            for (i, line) in lines.iter().enumerate() {
                match serde_json::from_str::<Line>(line) {
                    Ok(Line::Reserve {
                        id,
                        charges,
                        amount,
                        expires_at,
                        template,
                    }) => reserved.push((
                        g,
                        OpenReservation {
                            id,
                            charges,
                            amount,
                            expires_at: jiff::Timestamp::from_millisecond(expires_at)
                                .unwrap_or(jiff::Timestamp::UNIX_EPOCH),
                            payload: template,
                        },
                    )),
                    Ok(Line::Release { id }) => {
                        released.insert(id);
                    }
                    // A torn last line (a writer died, or is writing now)
                    // was never acknowledged: its request was not forwarded.
                    Err(e) if i == last => {
                        tracing::debug!(file = %path.display(), error = %e, "partial last line ignored")
                    }
                    Err(e) => {
                        tracing::warn!(file = %path.display(), error = %e, "unreadable reservation log line skipped")
                    }
                }
            }
        }
        let mut state = State {
            current: gens.last().map_or(0, |g| g + 1),
            bytes: 0,
            files: BTreeMap::new(),
            open: HashMap::new(),
            counts: gens.iter().map(|g| (*g, 0)).collect(),
            writing: false,
        };
        // A reservation logged more than once (extended) is its last line.
        let mut latest: HashMap<String, usize> = HashMap::new();
        for (i, (_, r)) in reserved.iter().enumerate() {
            latest.insert(r.id.clone(), i);
        }
        let mut still_open = Vec::new();
        for (i, (g, r)) in reserved.into_iter().enumerate() {
            if latest.get(&r.id) != Some(&i) || released.contains(&r.id) || is_settled(&r.id)? {
                continue;
            }
            state.open.insert(r.id.clone(), g);
            *state.counts.entry(g).or_default() += 1;
            still_open.push(r);
        }
        let log = ReservationLog {
            base,
            state: Mutex::new(state),
        };
        Ok((log, still_open))
    }

    /// The first reservation makes this process the log's writer: it opens
    /// a new generation and clears closed old ones. A process that only
    /// reads (the CLI next to a running gateway) never touches the files.
    fn start_writing(&self, s: &mut State) -> Result<()> {
        if s.writing {
            return Ok(());
        }
        let path = generation(&self.base, s.current);
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| io(&path, e))?;
        s.files.insert(s.current, f);
        s.counts.entry(s.current).or_default();
        s.writing = true;
        self.collect(s);
        Ok(())
    }

    /// The append handle of generation `n`, opened on first use.
    fn file<'s>(&self, s: &'s mut State, n: u64) -> Result<&'s mut File> {
        match s.files.entry(n) {
            std::collections::btree_map::Entry::Occupied(f) => Ok(f.into_mut()),
            std::collections::btree_map::Entry::Vacant(v) => {
                let path = generation(&self.base, n);
                let mut f = OpenOptions::new()
                    .read(true)
                    .append(true)
                    .open(&path)
                    .map_err(|e| io(&path, e))?;
                // A file a dead writer left may end in a torn line: end it,
                // so what is appended now is a line of its own.
                let len = f.metadata().map_err(|e| io(&path, e))?.len();
                if len > 0 {
                    use std::io::{Read, Seek, SeekFrom};
                    let mut last = [0u8; 1];
                    f.seek(SeekFrom::Start(len - 1))
                        .and_then(|_| f.read_exact(&mut last))
                        .map_err(|e| io(&path, e))?;
                    if last[0] != b'\n' {
                        f.write_all(b"\n").map_err(|e| io(&path, e))?;
                    }
                }
                Ok(v.insert(f))
            }
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends a reservation; once this returns it survives a crash.
    pub(super) fn reserve(&self, r: &OpenReservation) -> Result<()> {
        let mut line = serde_json::to_vec(&ReserveLine {
            t: "r",
            id: &r.id,
            charges: &r.charges,
            amount: r.amount,
            expires_at: r.expires_at.as_millisecond(),
            template: &r.payload,
        })
        .map_err(|e| StoreError::Invalid(e.to_string()))?;
        line.push(b'\n');
        let mut s = self.state();
        self.start_writing(&mut s)?;
        if s.bytes >= ROTATE_BYTES {
            self.rotate(&mut s)?;
        }
        let current = s.current;
        let file = self.file(&mut s, current)?;
        // One write of the whole line: a crash leaves it whole or torn,
        // never interleaved with another (the lock serializes writers).
        file.write_all(&line)
            .map_err(|e| io(&generation(&self.base, current), e))?;
        s.bytes += line.len() as u64;
        // A reservation logged again (grown by an extension) supersedes its
        // earlier line: that line's file no longer waits for it.
        if let Some(old) = s.open.insert(r.id.clone(), current)
            && let Some(c) = s.counts.get_mut(&old)
        {
            *c = c.saturating_sub(1);
        }
        *s.counts.entry(current).or_default() += 1;
        Ok(())
    }

    fn rotate(&self, s: &mut State) -> Result<()> {
        let next = s.current + 1;
        let path = generation(&self.base, next);
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| io(&path, e))?;
        s.files.insert(next, f);
        s.counts.entry(next).or_default();
        s.current = next;
        s.bytes = 0;
        self.collect(s);
        Ok(())
    }

    /// A reservation given back: its release line goes into the file that
    /// holds it (so no file can outlive the other), then it is closed.
    pub(super) fn release(&self, id: &str) -> Result<()> {
        let mut s = self.state();
        let Some(&held_in) = s.open.get(id) else {
            return Ok(());
        };
        let mut line = serde_json::to_vec(&Line::Release { id: id.to_string() })
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
        line.push(b'\n');
        self.file(&mut s, held_in)?
            .write_all(&line)
            .map_err(|e| io(&generation(&self.base, held_in), e))?;
        Self::close(&mut s, id);
        self.collect(&mut s);
        Ok(())
    }

    /// Reservations whose settlement just committed.
    pub(super) fn settled<'a>(&self, ids: impl IntoIterator<Item = &'a str>) {
        let mut s = self.state();
        for id in ids {
            Self::close(&mut s, id);
        }
        self.collect(&mut s);
    }

    fn close(s: &mut State, id: &str) {
        if let Some(g) = s.open.remove(id)
            && let Some(c) = s.counts.get_mut(&g)
        {
            *c = c.saturating_sub(1);
        }
    }

    /// Deletes old generations with nothing open (only once writing).
    fn collect(&self, s: &mut State) {
        if !s.writing {
            return;
        }
        let current = s.current;
        let done: Vec<u64> = s
            .counts
            .iter()
            .filter(|(g, c)| **g != current && **c == 0)
            .map(|(g, _)| *g)
            .collect();
        for g in done {
            s.files.remove(&g);
            s.counts.remove(&g);
            let path = generation(&self.base, g);
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(file = %path.display(), error = %e, "cannot remove a closed reservation log");
            }
        }
    }

    /// Open reservations and generation files.
    #[cfg(test)]
    pub(super) fn sizes(&self) -> (usize, usize) {
        let s = self.state();
        (s.open.len(), s.counts.len())
    }

    /// Is `id` an open reservation of this log?
    pub(super) fn is_open(&self, id: &str) -> bool {
        self.state().open.contains_key(id)
    }
}

fn generation(base: &Path, n: u64) -> PathBuf {
    let mut name = base.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}
