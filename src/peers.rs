//! The live connections, in a hand-rolled singly linked list.
//!
//! The list is keyed by link id and holds whatever the event loop keeps per
//! connection. New entries go to the front, as in ii's `channel_add`; removal
//! unlinks through a cursor over the `next` pointers; dropping a long list
//! is iterative, so it cannot overflow the stack. A peer has a handful of
//! links (a few dozen at most), so a walk is cheaper than any hashing.

/// One entry: a key and its value.
struct Node<T> {
    key: u64,
    val: T,
    next: Option<Box<Node<T>>>,
}

/// A singly linked list of values keyed by `u64`.
pub struct PeerList<T> {
    head: Option<Box<Node<T>>>,
    len: usize,
}

impl<T> Default for PeerList<T> {
    fn default() -> Self {
        PeerList { head: None, len: 0 }
    }
}

impl<T> PeerList<T> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.head.is_none()
    }

    /// Adds `val` under `key` at the front. The caller keeps keys unique.
    pub fn push(&mut self, key: u64, val: T) {
        let next = self.head.take();
        self.head = Some(Box::new(Node { key, val, next }));
        self.len += 1;
    }

    pub fn get(&self, key: u64) -> Option<&T> {
        self.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    pub fn get_mut(&mut self, key: u64) -> Option<&mut T> {
        let mut cur = self.head.as_deref_mut();
        while let Some(node) = cur {
            if node.key == key {
                return Some(&mut node.val);
            }
            cur = node.next.as_deref_mut();
        }
        None
    }

    /// Unlinks the entry under `key` and returns its value.
    pub fn remove(&mut self, key: u64) -> Option<T> {
        let mut cur = &mut self.head;
        loop {
            match cur {
                None => return None,
                Some(node) if node.key == key => {
                    let node = cur.take().expect("matched Some");
                    *cur = node.next;
                    self.len -= 1;
                    return Some(node.val);
                }
                Some(node) => cur = &mut node.next,
            }
        }
    }

    /// Entries from front to back.
    pub fn iter(&self) -> Iter<'_, T> {
        Iter {
            cur: self.head.as_deref(),
        }
    }

    /// Entries from front to back, values mutable.
    pub fn iter_mut(&mut self) -> IterMut<'_, T> {
        IterMut {
            cur: self.head.as_deref_mut(),
        }
    }

    /// The keys, front to back: collect them, then act, never remove while
    /// iterating.
    pub fn keys(&self) -> Vec<u64> {
        self.iter().map(|(k, _)| k).collect()
    }
}

impl<T> Drop for PeerList<T> {
    fn drop(&mut self) {
        let mut cur = self.head.take();
        while let Some(mut node) = cur {
            cur = node.next.take();
        }
    }
}

pub struct Iter<'a, T> {
    cur: Option<&'a Node<T>>,
}

impl<'a, T> Iterator for Iter<'a, T> {
    type Item = (u64, &'a T);

    fn next(&mut self) -> Option<Self::Item> {
        let node = self.cur?;
        self.cur = node.next.as_deref();
        Some((node.key, &node.val))
    }
}

pub struct IterMut<'a, T> {
    cur: Option<&'a mut Node<T>>,
}

impl<'a, T> Iterator for IterMut<'a, T> {
    type Item = (u64, &'a mut T);

    fn next(&mut self) -> Option<Self::Item> {
        let node = self.cur.take()?;
        self.cur = node.next.as_deref_mut();
        Some((node.key, &mut node.val))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_front_get_remove() {
        let mut l = PeerList::new();
        assert!(l.is_empty());
        for k in 1..=5 {
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
    }

    #[test]
    fn iter_mut_changes_values() {
        let mut l = PeerList::new();
        for k in 0..4 {
            l.push(k, String::from("x"));
        }
        for (k, v) in l.iter_mut() {
            v.push_str(&k.to_string());
        }
        let got: Vec<String> = l.iter().map(|(_, v)| v.clone()).collect();
        assert_eq!(got, ["x3", "x2", "x1", "x0"]);
    }

    #[test]
    fn remove_while_walking_keys() {
        let mut l = PeerList::new();
        for k in 0..10 {
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
        for k in 0..1_000_000 {
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
            if x % 3 == 0 || model.iter().any(|(k, _)| *k == key) {
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
        }
        let got: Vec<(u64, u64)> = l.iter().map(|(k, v)| (k, *v)).collect();
        assert_eq!(got, model);
    }
}
