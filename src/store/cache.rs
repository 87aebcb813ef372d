//! The opt-in read cache: sessions this app loaded lately, served again from memory
//! while a load from Redis would have answered the same.
//!
//! A load within the touch interval writes nothing and tells how long another load
//! would keep answering the same (`fresh`). Only such loads fill the cache, and an entry
//! serves reads until the earlier of that moment and the key's expiry, measured on this
//! app's monotonic clock from when the load was *sent* (so it ends no later than Redis
//! would say). Before then, any change to the key made anywhere removes it:
//!
//! - changes by other programs and other app instances, expiry and eviction arrive as
//!   invalidations from the tracking connection ([`tracking`](super::tracking));
//! - this app's own writes remove the key here before they are sent and again once they
//!   are answered, so a request never reads an older session than one its own app
//!   wrote. They are dropped, not updated: a save's reply does not carry the whole
//!   session, and the next load fills the entry again. (Their invalidations arrive too:
//!   `NOLOOP` would only spare the tracking connection's own writes, and it writes
//!   nothing.);
//! - a fill carries a [`Ticket`] taken before its load was sent, and is dropped if the
//!   key may have changed since (its shard's generation moved, the cache was flushed, or
//!   the tracking connection was not trusted then or now).
//!
//! Entries are served only while the tracking connection is trusted: its last barrier (a
//! `PING` answered after every invalidation sent before it) was sent less than
//! `max_staleness` ago. When it fails, reconnects or falls behind, the whole cache is
//! flushed before anything is served from it again.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, MutexGuard, RwLock, Weak,
    },
    time::Duration,
};

use bytes::Bytes;
use tokio::time::Instant;

use crate::{config::ReadCache, exchange::Loaded};

/// Invalidation generations are kept per shard of the key space, not per key: a fill
/// only needs to know whether its key *may* have changed, and a shared counter bounds the
/// memory whatever the number of keys.
const SHARDS: usize = 4096;

/// Bytes counted for an entry besides its key, field names and values.
const ENTRY_OVERHEAD: usize = 160;
/// Bytes counted per field besides its name and value.
const FIELD_OVERHEAD: usize = 48;

/// Counters of a layer's read cache; see
/// [`RedisSessionLayer::cache_stats`](crate::RedisSessionLayer::cache_stats).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// Loads served from the cache, without a round trip.
    pub hits: u64,
    /// Loads that went to Redis.
    pub misses: u64,
    /// Sessions held now.
    pub entries: usize,
    /// Bytes they take, as counted against the limit (keys, field names and values, and
    /// a fixed overhead per entry and field).
    pub bytes: usize,
}

/// Every read cache of this process. A write through any layer (or manager) drops its key
/// from all of them before it is sent and once it is answered, so two layers on one
/// prefix in one app read each other's writes at once, as one layer does its own.
static CACHES: RwLock<Vec<Weak<Cache>>> = RwLock::new(Vec::new());

/// Adds `cache` to the caches every write of this process invalidates.
pub(crate) fn register(cache: &Arc<Cache>) {
    let mut caches = CACHES.write().unwrap_or_else(|e| e.into_inner());
    caches.retain(|c| c.strong_count() > 0);
    caches.push(Arc::downgrade(cache));
}

/// Drops `key` from every cache of this process; see [`Cache::invalidate`].
pub(crate) fn invalidate_everywhere(key: &[u8]) {
    let caches = CACHES.read().unwrap_or_else(|e| e.into_inner());
    for cache in caches.iter().filter_map(Weak::upgrade) {
        cache.invalidate(key);
    }
}

/// The cache of one layer.
#[derive(Debug)]
pub(crate) struct Cache {
    settings: ReadCache,
    state: Mutex<State>,
    /// A tracking task is running for this cache.
    tracked: AtomicBool,
    hits: AtomicU64,
    misses: AtomicU64,
}

#[derive(Debug)]
struct State {
    entries: HashMap<Bytes, Entry>,
    /// Keys in the order they were filled, with their entry's stamp, oldest first: what
    /// to evict when full. A record whose entry is gone or newer is skipped.
    order: VecDeque<(Bytes, u64)>,
    bytes: usize,
    generations: Vec<u32>,
    /// Bumped by every flush: a ticket from before it is void.
    epoch: u64,
    /// Entries are served and filled only before this instant.
    trusted_until: Option<Instant>,
    next_stamp: u64,
}

#[derive(Debug)]
struct Entry {
    fields: Vec<(String, String)>,
    sealed: HashSet<String>,
    /// Served until then.
    valid_until: Instant,
    /// When the key expires in Redis, as far as this app can tell.
    expires_at: Option<Instant>,
    bytes: usize,
    stamp: u64,
}

/// Taken before a load is sent; its fill is accepted only if nothing may have changed
/// the key since.
#[derive(Debug)]
pub(crate) struct Ticket {
    shard: usize,
    generation: u32,
    epoch: u64,
    trusted: bool,
    sent_at: Instant,
}

fn shard(key: &[u8]) -> usize {
    // FNV-1a: keys are a prefix and a digest (or a random ID), so any mixing will do.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    (hash % SHARDS as u64) as usize
}

impl Cache {
    pub(crate) fn new(settings: ReadCache) -> Self {
        Self {
            settings,
            state: Mutex::new(State {
                entries: HashMap::new(),
                order: VecDeque::new(),
                bytes: 0,
                generations: vec![0; SHARDS],
                epoch: 0,
                trusted_until: None,
                next_stamp: 0,
            }),
            tracked: AtomicBool::new(false),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// `true` if no tracking task runs for this cache: the caller starts one, which calls
    /// [`tracking_ended`](Self::tracking_ended) when it ends.
    pub(crate) fn claim_tracking(&self) -> bool {
        !self.tracked.load(Ordering::Relaxed) && !self.tracked.swap(true, Ordering::AcqRel)
    }

    /// The tracking task ended (its runtime shut down): nothing is served until a new
    /// one has passed a barrier.
    pub(crate) fn tracking_ended(&self) {
        self.flush();
        self.tracked.store(false, Ordering::Release);
    }

    pub(crate) fn settings(&self) -> &ReadCache {
        &self.settings
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves nothing half-done that a flush would not
        // mend; never let it take the layer down.
        self.state.lock().unwrap_or_else(|poisoned| {
            let mut state = poisoned.into_inner();
            state.flush();
            state
        })
    }

    /// The cached session under `key` if it may be served now; otherwise a ticket to
    /// fill it with the load about to be sent.
    pub(crate) fn lookup(&self, key: &[u8]) -> Result<Loaded, Ticket> {
        let now = Instant::now();
        let mut state = self.state();
        let trusted = state.trusted_until.is_some_and(|until| now < until);
        if trusted {
            if let Some(entry) = state.entries.get(key) {
                if now < entry.valid_until {
                    let loaded = Loaded {
                        fields: entry.fields.clone(),
                        expires_in: entry.expires_at.map(|at| at.saturating_duration_since(now)),
                        renewed: false,
                        sealed: entry.sealed.clone(),
                    };
                    drop(state);
                    self.hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(loaded);
                }
            }
        }
        state.remove(key);
        let shard = shard(key);
        let ticket = Ticket {
            shard,
            generation: state.generations[shard],
            epoch: state.epoch,
            trusted,
            sent_at: now,
        };
        drop(state);
        self.misses.fetch_add(1, Ordering::Relaxed);
        Err(ticket)
    }

    /// Keeps what a load within the touch interval returned, if nothing may have changed
    /// the key since its ticket was taken. `fresh` is how long Redis would answer the
    /// same; `ttl` the key's TTL.
    pub(crate) fn fill(
        &self,
        key: Bytes,
        ticket: Ticket,
        loaded: &Loaded,
        fresh: Duration,
        ttl: Option<Duration>,
    ) {
        let Some(ttl) = ttl else { return };
        let valid_until = ticket.sent_at + fresh.min(ttl);
        let bytes = ENTRY_OVERHEAD
            + key.len()
            + loaded
                .fields
                .iter()
                .map(|(name, value)| name.len() + value.len() + FIELD_OVERHEAD)
                .sum::<usize>();
        if bytes > self.settings.max_bytes {
            return;
        }
        let now = Instant::now();
        let mut state = self.state();
        let current = ticket.trusted
            && ticket.epoch == state.epoch
            && ticket.generation == state.generations[ticket.shard]
            && state.trusted_until.is_some_and(|until| now < until)
            && now < valid_until;
        if !current {
            return;
        }
        state.remove(&key);
        while state.entries.len() >= self.settings.max_entries
            || state.bytes + bytes > self.settings.max_bytes
        {
            if !state.evict_oldest() {
                return;
            }
        }
        let stamp = state.next_stamp;
        state.next_stamp += 1;
        state.bytes += bytes;
        state.order.push_back((key.clone(), stamp));
        state.entries.insert(
            key,
            Entry {
                fields: loaded.fields.clone(),
                sealed: loaded.sealed.clone(),
                valid_until,
                expires_at: Some(ticket.sent_at + ttl),
                bytes,
                stamp,
            },
        );
        // Records of entries removed since are dropped once they outnumber the entries.
        if state.order.len() > 2 * state.entries.len() + 64 {
            let State { order, entries, .. } = &mut *state;
            order.retain(|(key, stamp)| entries.get(key).is_some_and(|e| e.stamp == *stamp));
        }
    }

    /// The key changed (or is about to): drop its entry, and void every ticket of its
    /// shard taken so far.
    pub(crate) fn invalidate(&self, key: &[u8]) {
        let mut state = self.state();
        let shard = shard(key);
        state.generations[shard] = state.generations[shard].wrapping_add(1);
        state.remove(key);
    }

    /// Forgets everything and stops serving until the next [`trust`](Self::trust).
    pub(crate) fn flush(&self) {
        self.state().flush();
    }

    /// Every invalidation for a change made before `barrier` has been applied: serve
    /// entries until `barrier + max_staleness`.
    pub(crate) fn trust(&self, barrier: Instant) {
        let until = barrier + self.settings.max_staleness;
        let mut state = self.state();
        match state.trusted_until {
            Some(t) if t >= until => {}
            _ => state.trusted_until = Some(until),
        }
    }

    pub(crate) fn stats(&self) -> CacheStats {
        let state = self.state();
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            entries: state.entries.len(),
            bytes: state.bytes,
        }
    }
}

impl State {
    fn remove(&mut self, key: &[u8]) {
        if let Some(entry) = self.entries.remove(key) {
            self.bytes -= entry.bytes;
        }
    }

    /// Removes the oldest entry; `false` if there is none.
    fn evict_oldest(&mut self) -> bool {
        while let Some((key, stamp)) = self.order.pop_front() {
            if self.entries.get(&key).is_some_and(|e| e.stamp == stamp) {
                self.remove(&key);
                return true;
            }
        }
        false
    }

    fn flush(&mut self) {
        self.entries.clear();
        self.order.clear();
        self.bytes = 0;
        self.epoch += 1;
        self.trusted_until = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loaded(fields: &[(&str, &str)]) -> Loaded {
        Loaded {
            fields: fields
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
            expires_in: Some(Duration::from_secs(60)),
            renewed: false,
            sealed: HashSet::new(),
        }
    }

    fn cache(max_entries: usize, max_bytes: usize) -> Cache {
        let cache = Cache::new(
            ReadCache::new()
                .max_entries(max_entries)
                .max_bytes(max_bytes),
        );
        cache.trust(Instant::now());
        cache
    }

    const FRESH: Duration = Duration::from_secs(5);
    const TTL: Option<Duration> = Some(Duration::from_secs(60));

    fn fill(cache: &Cache, key: &str, value: &str) {
        let ticket = cache.lookup(key.as_bytes()).expect_err("a miss");
        cache.fill(
            Bytes::copy_from_slice(key.as_bytes()),
            ticket,
            &loaded(&[("a", value)]),
            FRESH,
            TTL,
        );
    }

    #[test]
    fn a_filled_entry_is_served_until_it_is_invalidated() {
        let cache = cache(10, 1 << 20);
        fill(&cache, "s:1", "x");
        let hit = cache.lookup(b"s:1").expect("a hit");
        assert_eq!(hit.fields, vec![("a".to_owned(), "x".to_owned())]);
        assert!(!hit.renewed);
        cache.invalidate(b"s:1");
        assert!(cache.lookup(b"s:1").is_err());
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses, stats.entries), (1, 2, 0));
    }

    #[test]
    fn a_fill_after_an_invalidation_of_its_key_is_dropped() {
        let cache = cache(10, 1 << 20);
        let ticket = cache.lookup(b"s:1").expect_err("a miss");
        cache.invalidate(b"s:1");
        cache.fill(Bytes::from_static(b"s:1"), ticket, &loaded(&[]), FRESH, TTL);
        assert!(cache.lookup(b"s:1").is_err());
    }

    #[test]
    fn a_fill_after_a_flush_is_dropped_and_nothing_is_served_until_trusted_again() {
        let cache = cache(10, 1 << 20);
        fill(&cache, "s:1", "x");
        let ticket = cache.lookup(b"s:2").expect_err("a miss");
        cache.flush();
        cache.trust(Instant::now());
        cache.fill(Bytes::from_static(b"s:2"), ticket, &loaded(&[]), FRESH, TTL);
        assert!(cache.lookup(b"s:1").is_err());
        assert!(cache.lookup(b"s:2").is_err());
    }

    #[test]
    fn nothing_is_served_or_filled_without_a_recent_barrier() {
        let cache = Cache::new(ReadCache::new());
        let ticket = cache.lookup(b"s:1").expect_err("a miss");
        cache.trust(Instant::now());
        cache.fill(Bytes::from_static(b"s:1"), ticket, &loaded(&[]), FRESH, TTL);
        assert!(
            cache.lookup(b"s:1").is_err(),
            "the ticket predates the trust"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_entry_is_served_no_longer_than_the_load_stays_fresh_or_the_key_lives() {
        let cache = cache(10, 1 << 20);
        let ticket = cache.lookup(b"s:1").expect_err("a miss");
        let short = Some(Duration::from_millis(100));
        cache.fill(
            Bytes::from_static(b"s:1"),
            ticket,
            &loaded(&[]),
            FRESH,
            short,
        );
        cache.trust(Instant::now());
        assert!(cache.lookup(b"s:1").is_ok());
        tokio::time::advance(Duration::from_millis(100)).await;
        cache.trust(Instant::now());
        assert!(cache.lookup(b"s:1").is_err(), "the key has expired");
    }

    #[tokio::test(start_paused = true)]
    async fn entries_stop_being_served_when_the_barrier_is_older_than_max_staleness() {
        let cache = cache(10, 1 << 20);
        fill(&cache, "s:1", "x");
        tokio::time::advance(ReadCache::new().max_staleness).await;
        assert!(cache.lookup(b"s:1").is_err());
    }

    #[test]
    fn the_oldest_entries_make_room_within_both_limits() {
        let cache = cache(2, 1 << 20);
        for key in ["s:1", "s:2", "s:3"] {
            fill(&cache, key, "x");
        }
        assert!(cache.lookup(b"s:1").is_err());
        assert!(cache.lookup(b"s:3").is_ok());
        assert_eq!(cache.stats().entries, 2);

        let one = ENTRY_OVERHEAD + 3 + 1 + 100 + FIELD_OVERHEAD;
        let cache = cache_with_bytes(2 * one);
        for key in ["s:1", "s:2", "s:3"] {
            fill(&cache, key, &"v".repeat(100));
        }
        let stats = cache.stats();
        assert_eq!((stats.entries, stats.bytes), (2, 2 * one));
        assert!(cache.lookup(b"s:1").is_err());
    }

    fn cache_with_bytes(max_bytes: usize) -> Cache {
        cache(1000, max_bytes)
    }

    #[test]
    fn one_tracking_task_at_a_time_and_a_new_one_once_it_ended() {
        let cache = cache(10, 1 << 20);
        fill(&cache, "s:1", "x");
        assert!(cache.claim_tracking());
        assert!(!cache.claim_tracking());
        cache.tracking_ended();
        assert!(cache.lookup(b"s:1").is_err(), "flushed when its task ended");
        assert!(cache.claim_tracking());
    }

    #[test]
    fn a_session_larger_than_the_whole_cache_is_not_kept() {
        let cache = cache(10, 100);
        fill(&cache, "s:1", &"v".repeat(200));
        let stats = cache.stats();
        assert_eq!((stats.entries, stats.bytes), (0, 0));
    }
}
