//! The shard-local cache of hot codes: a bounded CLOCK cache (second-chance
//! LRU) with a **generation** that makes a fill racing an invalidation
//! harmless. Pure data, no I/O; each shard keeps one in a `thread_local!`
//! (a shard is one thread), tested below.
//!
//! Contract:
//! - **Bounded.** At most `capacity` codes; a new one evicts the first entry
//!   the clock hand finds not referenced since its last pass (each
//!   [`Cache::get`] sets the entry's bit, each pass clears it). Capacity 0
//!   caches nothing.
//! - **Invalidation wins over a fill that read before it.** A miss takes
//!   [`Cache::generation`] *before* it reads the database, and fills with
//!   [`Cache::fill`] giving that generation back: the fill is dropped when
//!   any invalidation ([`Cache::invalidate`], [`Cache::clear`]) happened on
//!   this shard since. Without it, a read that found the row just before
//!   another shard deleted it could put the old URL in this cache *after*
//!   the delete's invalidation went through, and the shard would redirect a
//!   deleted code for as long as the entry lived. (One counter per shard,
//!   not per code: an invalidation makes the fills in flight at that moment
//!   skip the cache once, which costs a database read later; deletes and
//!   updates are rare next to redirects.)

use std::collections::HashMap;
use std::rc::Rc;

/// One cached code.
#[derive(Debug)]
struct Slot {
    code: Rc<str>,
    url: Rc<str>,
    referenced: bool,
}

/// A CLOCK cache of code -> URL with an invalidation generation.
#[derive(Debug)]
pub(crate) struct Cache {
    capacity: usize,
    slots: Vec<Slot>,
    index: HashMap<Rc<str>, usize>,
    hand: usize,
    generation: u64,
}

impl Cache {
    pub(crate) fn new(capacity: usize) -> Cache {
        Cache {
            capacity,
            slots: Vec::with_capacity(capacity),
            index: HashMap::with_capacity(capacity),
            hand: 0,
            generation: 0,
        }
    }

    /// The URL of `code` if cached, marking it recently used.
    pub(crate) fn get(&mut self, code: &str) -> Option<Rc<str>> {
        let &i = self.index.get(code)?;
        let slot = &mut self.slots[i];
        slot.referenced = true;
        Some(slot.url.clone())
    }

    /// The generation to hand back to [`fill`](Self::fill) after a read.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// Caches `code -> url` read from the database at `generation`, unless
    /// an invalidation came since (then it is dropped): whether it was kept.
    pub(crate) fn fill(&mut self, generation: u64, code: &str, url: Rc<str>) -> bool {
        if generation != self.generation || self.capacity == 0 {
            return false;
        }
        if let Some(&i) = self.index.get(code) {
            self.slots[i].url = url;
            return true;
        }
        let code: Rc<str> = code.into();
        let slot = Slot {
            code: code.clone(),
            url,
            referenced: false,
        };
        if self.slots.len() < self.capacity {
            self.index.insert(code, self.slots.len());
            self.slots.push(slot);
            return true;
        }
        let victim = self.advance_to_victim();
        let old = std::mem::replace(&mut self.slots[victim], slot);
        self.index.remove(&old.code);
        self.index.insert(code, victim);
        self.hand = (victim + 1) % self.capacity;
        true
    }

    /// The first slot from the hand on not referenced since the last pass,
    /// clearing the bits it passes (found within two turns at most).
    fn advance_to_victim(&mut self) -> usize {
        loop {
            let slot = &mut self.slots[self.hand];
            if !slot.referenced {
                return self.hand;
            }
            slot.referenced = false;
            self.hand = (self.hand + 1) % self.slots.len();
        }
    }

    /// Forgets `code` (deleted or changed) and fences off the fills in
    /// flight (see the module docs).
    pub(crate) fn invalidate(&mut self, code: &str) {
        self.generation += 1;
        let Some(i) = self.index.remove(code) else {
            return;
        };
        self.slots.swap_remove(i);
        if let Some(moved) = self.slots.get(i) {
            self.index.insert(moved.code.clone(), i);
        }
        if self.hand >= self.slots.len() {
            self.hand = 0;
        }
    }

    /// Forgets everything, fencing off the fills in flight.
    pub(crate) fn clear(&mut self) {
        self.generation += 1;
        self.slots.clear();
        self.index.clear();
        self.hand = 0;
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> Rc<str> {
        text.into()
    }

    #[test]
    fn gets_what_was_filled() {
        let mut cache = Cache::new(4);
        assert_eq!(cache.get("a"), None);
        assert!(cache.fill(cache.generation(), "a", url("http://a/")));
        assert_eq!(cache.get("a").as_deref(), Some("http://a/"));
        assert!(cache.fill(cache.generation(), "a", url("http://a2/")));
        assert_eq!(cache.get("a").as_deref(), Some("http://a2/"));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn stays_bounded_and_evicts_the_unreferenced_first() {
        let mut cache = Cache::new(3);
        for code in ["a", "b", "c"] {
            cache.fill(cache.generation(), code, url(code));
        }
        // a and c are used; b is the one a new entry pushes out.
        cache.get("a");
        cache.get("c");
        cache.fill(cache.generation(), "d", url("d"));
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.get("b"), None);
        for code in ["a", "c", "d"] {
            assert!(cache.get(code).is_some(), "{code} was evicted");
        }
        for i in 0..100 {
            let code = format!("x{i}");
            cache.fill(cache.generation(), &code, url(&code));
            assert!(cache.len() <= 3);
            assert!(cache.get(&code).is_some());
        }
    }

    #[test]
    fn a_fill_that_read_before_an_invalidation_is_dropped() {
        let mut cache = Cache::new(8);
        // A miss on this shard reads the row ...
        let read_at = cache.generation();
        // ... another shard deletes it and this shard acknowledges ...
        cache.invalidate("a");
        // ... then the read comes back with the old row: not cached.
        assert!(!cache.fill(read_at, "a", url("old")));
        assert_eq!(cache.get("a"), None);
        // A read that began after the invalidation fills as usual.
        assert!(cache.fill(cache.generation(), "a", url("new")));
        assert_eq!(cache.get("a").as_deref(), Some("new"));
        let read_at = cache.generation();
        cache.clear();
        assert!(!cache.fill(read_at, "b", url("b")));
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn invalidation_keeps_the_index_consistent() {
        let mut cache = Cache::new(4);
        for code in ["a", "b", "c", "d"] {
            cache.fill(cache.generation(), code, url(code));
        }
        cache.invalidate("a");
        cache.invalidate("zz");
        assert_eq!(cache.get("a"), None);
        for code in ["b", "c", "d"] {
            assert_eq!(cache.get(code).as_deref(), Some(code));
        }
        cache.fill(cache.generation(), "e", url("e"));
        cache.fill(cache.generation(), "f", url("f"));
        assert_eq!(cache.len(), 4);
        cache.invalidate("d");
        cache.invalidate("f");
        assert_eq!(cache.len(), 2);
        for code in ["a", "b", "c", "d", "e", "f"] {
            if let Some(found) = cache.get(code) {
                assert_eq!(&*found, code);
            }
        }
    }

    #[test]
    fn capacity_zero_caches_nothing() {
        let mut cache = Cache::new(0);
        assert!(!cache.fill(cache.generation(), "a", url("a")));
        assert_eq!(cache.get("a"), None);
    }
}
