//! The live connections, in a hand-rolled linked list.
//!
//! Entries live in a slab (a `Vec` of slots, freed slots reused) and are
//! linked front to back through slot numbers, both ways, as in ii's
//! channel list: new entries go to the front (`channel_add`), removal
//! unlinks in place. An index from key to slot finds an entry without a
//! walk, so the event loop can go from a readiness event to its connection,
//! and visit every connection once per turn, in time linear in their
//! number. Dropping the list frees one `Vec`: no recursion, however long.

use std::collections::HashMap;
use std::hash::Hash;

/// One slot: an entry and its neighbours, or free.
enum Slot<K, T> {
    Used {
        key: K,
        val: T,
        prev: Option<usize>,
        next: Option<usize>,
    },
    Free,
}

/// A doubly linked list of values, keyed by `K`.
pub struct PeerList<K, T> {
    slots: Vec<Slot<K, T>>,
    free: Vec<usize>,
    head: Option<usize>,
    index: HashMap<K, usize>,
    /// The slot last found by [`PeerList::get_mut`]: a stream of frames
    /// to one link finds it there, without a lookup (the slot says whose
    /// it is).
    last: usize,
}

impl<K: Copy + Eq + Hash, T> Default for PeerList<K, T> {
    fn default() -> Self {
        PeerList {
            slots: Vec::new(),
            free: Vec::new(),
            head: None,
            index: HashMap::new(),
            last: 0,
        }
    }
}

impl<K: Copy + Eq + Hash, T> PeerList<K, T> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.head.is_none()
    }

    /// Adds `val` under `key` at the front; an entry already under `key`
    /// is replaced (and returned).
    pub fn push(&mut self, key: K, val: T) -> Option<T> {
        let old = self.remove(key);
        let next = self.head;
        let slot = Slot::Used {
            key,
            val,
            prev: None,
            next,
        };
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i] = slot;
                i
            }
            None => {
                self.slots.push(slot);
                self.slots.len() - 1
            }
        };
        if let Some(n) = next {
            self.set_prev(n, Some(i));
        }
        self.head = Some(i);
        self.index.insert(key, i);
        old
    }

    pub fn get(&self, key: K) -> Option<&T> {
        match self.slots.get(*self.index.get(&key)?) {
            Some(Slot::Used { val, .. }) => Some(val),
            _ => None,
        }
    }

    pub fn get_mut(&mut self, key: K) -> Option<&mut T> {
        let i = match self.slots.get(self.last) {
            Some(Slot::Used { key: k, .. }) if *k == key => self.last,
            _ => *self.index.get(&key)?,
        };
        self.last = i;
        match self.slots.get_mut(i) {
            Some(Slot::Used { val, .. }) => Some(val),
            _ => None,
        }
    }

    /// Unlinks the entry under `key` and returns its value.
    pub fn remove(&mut self, key: K) -> Option<T> {
        let i = self.index.remove(&key)?;
        let Slot::Used {
            val, prev, next, ..
        } = std::mem::replace(&mut self.slots[i], Slot::Free)
        else {
            unreachable!("the index names used slots only");
        };
        match prev {
            Some(p) => self.set_next(p, next),
            None => self.head = next,
        }
        if let Some(n) = next {
            self.set_prev(n, prev);
        }
        self.free.push(i);
        Some(val)
    }

    fn set_prev(&mut self, i: usize, to: Option<usize>) {
        if let Slot::Used { prev, .. } = &mut self.slots[i] {
            *prev = to;
        }
    }

    fn set_next(&mut self, i: usize, to: Option<usize>) {
        if let Slot::Used { next, .. } = &mut self.slots[i] {
            *next = to;
        }
    }

    /// Entries from front to back.
    pub fn iter(&self) -> Iter<'_, K, T> {
        Iter {
            slots: &self.slots,
            cur: self.head,
        }
    }

    /// Entries from front to back, values mutable.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (K, &mut T)> + '_ {
        // Walk the links for the order, then hand out the slots: each
        // slot is visited once, so the borrows never overlap.
        let mut order = Vec::with_capacity(self.len());
        let mut cur = self.head;
        while let Some(i) = cur {
            order.push(i);
            cur = match &self.slots[i] {
                Slot::Used { next, .. } => *next,
                Slot::Free => None,
            };
        }
        let mut slots: Vec<Option<&mut Slot<K, T>>> = self.slots.iter_mut().map(Some).collect();
        order
            .into_iter()
            .filter_map(move |i| match slots[i].take() {
                Some(Slot::Used { key, val, .. }) => Some((*key, val)),
                _ => None,
            })
    }

    /// The keys, front to back: collect them, then act, never remove while
    /// iterating.
    pub fn keys(&self) -> Vec<K> {
        self.iter().map(|(k, _)| k).collect()
    }
}

pub struct Iter<'a, K, T> {
    slots: &'a [Slot<K, T>],
    cur: Option<usize>,
}

impl<'a, K: Copy, T> Iterator for Iter<'a, K, T> {
    type Item = (K, &'a T);

    fn next(&mut self) -> Option<Self::Item> {
        match &self.slots[self.cur?] {
            Slot::Used { key, val, next, .. } => {
                self.cur = *next;
                Some((*key, val))
            }
            Slot::Free => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_front_get_remove() {
        let mut l = PeerList::new();
        assert!(l.is_empty());
        for k in 1..=5u64 {
            l.push(k, k * 10);
        }
        assert_eq!(l.len(), 5);
        assert_eq!(l.keys(), vec![5, 4, 3, 2, 1]);
        assert_eq!(l.get(3), Some(&30));
        assert_eq!(l.get(9), None);
        *l.get_mut(3).unwrap() += 1;
        assert_eq!(l.remove(3), Some(31));
        assert_eq!(l.remove(3), None);
        assert_eq!(l.remove(5), Some(50)); // the head
        assert_eq!(l.remove(1), Some(10)); // the tail
        assert_eq!(l.keys(), vec![4, 2]);
        assert_eq!(l.len(), 2);
        assert_eq!(l.remove(4), Some(40));
        assert_eq!(l.remove(2), Some(20));
        assert!(l.is_empty());
        assert_eq!(l.len(), 0);
        // Freed slots are used again.
        l.push(7, 70);
        assert_eq!(l.slots.len(), 5);
        assert_eq!(l.push(7, 71), Some(70));
        assert_eq!(l.keys(), vec![7]);
    }

    /// The slot last found is taken only when it still holds that key:
    /// not once its entry is gone, nor when another key has its slot.
    #[test]
    fn the_last_found_is_found_again_only_while_it_is_there() {
        let mut l = PeerList::new();
        l.push(1u64, 10);
        l.push(2, 20);
        assert_eq!(l.get_mut(1), Some(&mut 10));
        assert_eq!(l.get_mut(1), Some(&mut 10));
        l.remove(1);
        assert_eq!(l.get_mut(1), None);
        // 3 takes the slot 1 had.
        l.push(3, 30);
        assert_eq!(l.get_mut(1), None);
        assert_eq!(l.get_mut(3), Some(&mut 30));
        assert_eq!(l.get_mut(2), Some(&mut 20));
        assert_eq!(l.get_mut(3), Some(&mut 30));
    }

    #[test]
    fn iter_mut_changes_values() {
        let mut l = PeerList::new();
        for k in 0..4u64 {
            l.push(k, String::from("x"));
        }
        l.remove(1);
        for (k, v) in l.iter_mut() {
            v.push_str(&k.to_string());
        }
        let got: Vec<String> = l.iter().map(|(_, v)| v.clone()).collect();
        assert_eq!(got, ["x3", "x2", "x0"]);
    }

    #[test]
    fn remove_while_walking_keys() {
        let mut l = PeerList::new();
        for k in 0..10u64 {
            l.push(k, k);
        }
        for k in l.keys() {
            if k % 2 == 0 {
                l.remove(k);
            }
        }
        assert_eq!(l.keys(), vec![9, 7, 5, 3, 1]);
    }

    #[test]
    fn long_list_drops_without_recursion() {
        let mut l = PeerList::new();
        for k in 0..1_000_000u64 {
            l.push(k, ());
        }
        assert_eq!(l.len(), 1_000_000);
        drop(l);
    }

    #[test]
    fn matches_a_model() {
        // Random pushes and removes against a Vec model.
        let mut l = PeerList::new();
        let mut model: Vec<(u64, u64)> = Vec::new();
        let mut x = 0x1234_5678_u64;
        for i in 0..20_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let key = x % 64;
            if x.is_multiple_of(3) || model.iter().any(|(k, _)| *k == key) {
                let want = model
                    .iter()
                    .position(|(k, _)| *k == key)
                    .map(|p| model.remove(p).1);
                assert_eq!(l.remove(key), want);
            } else {
                l.push(key, i);
                model.insert(0, (key, i));
            }
            assert_eq!(l.len(), model.len());
            assert_eq!(
                l.get(key),
                model.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
            );
        }
        let got: Vec<(u64, u64)> = l.iter().map(|(k, v)| (k, *v)).collect();
        assert_eq!(got, model);
        let mut_order: Vec<u64> = l.iter_mut().map(|(k, _)| k).collect();
        assert_eq!(mut_order, model.iter().map(|(k, _)| *k).collect::<Vec<_>>());
    }
}
