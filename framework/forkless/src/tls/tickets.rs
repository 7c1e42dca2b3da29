//! Session-ticket keys: one set for the whole process, rotated on a
//! schedule, exportable so a binary upgrade hands them to the new process.
//!
//! rustls's own `Ticketer` rotates its keys but never shows them, so a new
//! process could not decrypt the tickets this one issued. Here a ticket is
//! `key name (16) || nonce (12) || AES-256-GCM(state) || tag (16)`, the key
//! name as associated data. Two keys are live: the current one encrypts,
//! and both decrypt. Every [`ROTATE`] the current key becomes the previous
//! one and a fresh random key takes its place, so a ticket resumes for at
//! least [`ROTATE`] and at most twice that, and a key is erased at most
//! `2 * ROTATE` after it was made. Rotation goes by wall-clock time (key
//! ages are carried across processes).
//!
//! [`TicketKeys::export`] and [`TicketKeys::import`] carry the keys with
//! their creation times; the coordinator moves the bytes through a pipe
//! handed over with the listening sockets (never a file or an environment
//! variable).

use std::sync::RwLock;
use std::time::{SystemTime, UNIX_EPOCH};

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use rustls::server::ProducesTickets;

/// How long a key encrypts before the next one takes over, in seconds.
pub(crate) const ROTATE: u64 = 6 * 3600;

const NAME_LEN: usize = 16;
const KEY_LEN: usize = 32;
/// Version byte of the exported form.
const EXPORT_VERSION: u8 = 1;
/// Bytes of one exported key: name, key, creation time.
const EXPORTED_KEY: usize = NAME_LEN + KEY_LEN + 8;

struct Key {
    name: [u8; NAME_LEN],
    raw: [u8; KEY_LEN],
    sealing: LessSafeKey,
    /// Unix seconds.
    created: u64,
}

impl Key {
    fn new(name: [u8; NAME_LEN], raw: [u8; KEY_LEN], created: u64) -> Option<Self> {
        let sealing = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &raw).ok()?);
        Some(Self {
            name,
            raw,
            sealing,
            created,
        })
    }

    fn random(rng: &SystemRandom, created: u64) -> Option<Self> {
        let mut name = [0u8; NAME_LEN];
        let mut raw = [0u8; KEY_LEN];
        rng.fill(&mut name).ok()?;
        rng.fill(&mut raw).ok()?;
        Self::new(name, raw, created)
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        // Erase what this copy holds (ring erases its own key schedule).
        self.raw.iter_mut().for_each(|b| *b = 0);
    }
}

struct Keys {
    current: Key,
    previous: Option<Key>,
}

/// The process's ticket keys; see the module docs.
pub(crate) struct TicketKeys {
    keys: RwLock<Keys>,
    rng: SystemRandom,
}

impl std::fmt::Debug for TicketKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys themselves.
        f.debug_struct("TicketKeys").finish_non_exhaustive()
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl TicketKeys {
    /// Fresh random keys; `None` if the system's random source fails.
    pub(crate) fn new() -> Option<Self> {
        let rng = SystemRandom::new();
        let current = Key::random(&rng, unix_now())?;
        Some(Self {
            keys: RwLock::new(Keys {
                current,
                previous: None,
            }),
            rng,
        })
    }

    /// The keys another process exported; `None` if the bytes are not an
    /// export of this version.
    pub(crate) fn import(bytes: &[u8]) -> Option<Self> {
        let (&version, rest) = bytes.split_first()?;
        let (&count, rest) = rest.split_first()?;
        if version != EXPORT_VERSION || !(1..=2).contains(&count) {
            return None;
        }
        if rest.len() != usize::from(count) * EXPORTED_KEY {
            return None;
        }
        let mut keys = rest.chunks_exact(EXPORTED_KEY).map(|chunk| {
            let (name, rest) = chunk.split_at(NAME_LEN);
            let (raw, created) = rest.split_at(KEY_LEN);
            Key::new(
                name.try_into().ok()?,
                raw.try_into().ok()?,
                u64::from_be_bytes(created.try_into().ok()?),
            )
        });
        let current = keys.next()??;
        let previous = match keys.next() {
            Some(key) => Some(key?),
            None => None,
        };
        let imported = Self {
            keys: RwLock::new(Keys { current, previous }),
            rng: SystemRandom::new(),
        };
        imported.rotate_if_due(unix_now());
        Some(imported)
    }

    /// The live keys with their ages, for the next process of an upgrade.
    pub(crate) fn export(&self) -> Vec<u8> {
        self.rotate_if_due(unix_now());
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        let live = std::iter::once(&keys.current).chain(keys.previous.as_ref());
        let mut out = vec![EXPORT_VERSION, 1 + u8::from(keys.previous.is_some())];
        for key in live {
            out.extend_from_slice(&key.name);
            out.extend_from_slice(&key.raw);
            out.extend_from_slice(&key.created.to_be_bytes());
        }
        out
    }

    /// Rotates once the current key is [`ROTATE`] old (twice if it is
    /// twice as old: neither old key is kept).
    fn rotate_if_due(&self, now: u64) {
        let due = |keys: &Keys| now >= keys.current.created.saturating_add(ROTATE);
        if !due(&self.keys.read().unwrap_or_else(|e| e.into_inner())) {
            return;
        }
        let mut keys = self.keys.write().unwrap_or_else(|e| e.into_inner());
        if !due(&keys) {
            return;
        }
        let Some(fresh) = Key::random(&self.rng, now) else {
            tracing::warn!("cannot make a new session-ticket key; keeping the current one");
            return;
        };
        let stale = now >= keys.current.created.saturating_add(2 * ROTATE);
        let old = std::mem::replace(&mut keys.current, fresh);
        keys.previous = (!stale).then_some(old);
        tracing::debug!("session-ticket keys rotated");
    }

    #[cfg(test)]
    fn age_by(&self, seconds: u64) {
        let mut keys = self.keys.write().unwrap_or_else(|e| e.into_inner());
        keys.current.created -= seconds;
        if let Some(previous) = &mut keys.previous {
            previous.created -= seconds;
        }
    }
}

impl ProducesTickets for TicketKeys {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        ROTATE as u32
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.rotate_if_due(unix_now());
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).ok()?;
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        let key = &keys.current;
        let mut out = Vec::with_capacity(NAME_LEN + NONCE_LEN + plain.len() + 16);
        out.extend_from_slice(&key.name);
        out.extend_from_slice(&nonce);
        let mut sealed = plain.to_vec();
        key.sealing
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&key.name),
                &mut sealed,
            )
            .ok()?;
        out.extend_from_slice(&sealed);
        Some(out)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        let (name, rest) = cipher.split_at_checked(NAME_LEN)?;
        let (nonce, sealed) = rest.split_at_checked(NONCE_LEN)?;
        self.rotate_if_due(unix_now());
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        let key = std::iter::once(&keys.current)
            .chain(keys.previous.as_ref())
            .find(|key| key.name == name)?;
        let mut opened = sealed.to_vec();
        let plain = key
            .sealing
            .open_in_place(
                Nonce::try_assume_unique_for_key(nonce).ok()?,
                Aad::from(&key.name),
                &mut opened,
            )
            .ok()?;
        let len = plain.len();
        opened.truncate(len);
        Some(opened)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_opens_with_its_keys_only() {
        let keys = TicketKeys::new().expect("random");
        let ticket = keys.encrypt(b"session state").expect("sealed");
        assert_eq!(
            keys.decrypt(&ticket).as_deref(),
            Some(&b"session state"[..])
        );
        let mut tampered = ticket.clone();
        if let Some(last) = tampered.last_mut() {
            *last ^= 1;
        }
        assert_eq!(keys.decrypt(&tampered), None);
        assert_eq!(keys.decrypt(&ticket[..20]), None);
        let other = TicketKeys::new().expect("random");
        assert_eq!(other.decrypt(&ticket), None);
    }

    #[test]
    fn exported_keys_open_the_old_processes_tickets() {
        let keys = TicketKeys::new().expect("random");
        let ticket = keys.encrypt(b"state").expect("sealed");
        let next = TicketKeys::import(&keys.export()).expect("imported");
        assert_eq!(next.decrypt(&ticket).as_deref(), Some(&b"state"[..]));
        assert!(TicketKeys::import(&[]).is_none());
        assert!(TicketKeys::import(&[EXPORT_VERSION, 1, 0]).is_none());
        assert!(TicketKeys::import(&[2, 1]).is_none());
    }

    #[test]
    fn rotation_keeps_one_previous_key() {
        let keys = TicketKeys::new().expect("random");
        let first = keys.encrypt(b"one").expect("sealed");
        keys.age_by(ROTATE);
        let second = keys.encrypt(b"two").expect("sealed");
        // The first ticket still opens with the previous key.
        assert_eq!(keys.decrypt(&first).as_deref(), Some(&b"one"[..]));
        assert_eq!(keys.export()[1], 2);
        keys.age_by(ROTATE);
        let _ = keys.encrypt(b"three");
        assert_eq!(keys.decrypt(&first), None);
        assert_eq!(keys.decrypt(&second).as_deref(), Some(&b"two"[..]));
        // Keys older than two periods are both dropped.
        keys.age_by(3 * ROTATE);
        let _ = keys.encrypt(b"four");
        assert_eq!(keys.decrypt(&second), None);
        assert_eq!(keys.export()[1], 1);
    }
}
