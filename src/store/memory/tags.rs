//! The tag index: tag → keys, and the tagged slot each key holds, kept in step with the
//! writes and removals of tagged entries.

use super::*;

/// Tag → keys, and the tagged slot each key holds, behind one lock taken only by writes of
/// tagged entries, removals of tagged entries and purges by tag.
#[derive(Debug, Default)]
pub(super) struct TagIndex {
    pub(super) next_id: AtomicU64,
    pub(super) state: Mutex<Tagged>,
}

#[derive(Debug, Default)]
pub(super) struct Tagged {
    pub(super) by_tag: HashMap<String, HashSet<String>>,
    /// The id of the tagged slot each key holds, with its tags.
    pub(super) by_key: HashMap<String, (u64, Vec<String>)>,
}

impl TagIndex {
    pub(super) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Tagged> {
        match self.state.lock() {
            Ok(state) => state,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Records that `key` now holds slot `id` with `tags` (called as the slot is written,
    /// under the key's lock): the key leaves the tags it no longer has.
    pub(super) fn set(&self, key: &str, id: u64, tags: &[String]) {
        let mut state = self.lock();
        let state = &mut *state;
        if let Some((_, old)) = state.by_key.remove(key) {
            for tag in old.iter().filter(|tag| !tags.contains(tag)) {
                remove_member(&mut state.by_tag, tag, key);
            }
        }
        if tags.is_empty() {
            return;
        }
        for tag in tags {
            state
                .by_tag
                .entry(tag.clone())
                .or_default()
                .insert(key.to_owned());
        }
        state.by_key.insert(key.to_owned(), (id, tags.to_vec()));
    }

    /// Slot `id` of `key` left the store: its tags leave the index, unless a later slot of
    /// the key owns them now.
    pub(super) fn removed(&self, key: &str, id: u64) {
        let mut state = self.lock();
        let state = &mut *state;
        if state.by_key.get(key).is_some_and(|(owner, _)| *owner == id)
            && let Some((_, tags)) = state.by_key.remove(key)
        {
            for tag in &tags {
                remove_member(&mut state.by_tag, tag, key);
            }
        }
    }

    /// The keys tagged `tag` that start with `within`.
    pub(super) fn members(&self, tag: &str, within: &str) -> Vec<String> {
        self.lock().by_tag.get(tag).map_or_else(Vec::new, |keys| {
            keys.iter()
                .filter(|key| key.starts_with(within))
                .cloned()
                .collect()
        })
    }
}

pub(super) fn remove_member(by_tag: &mut HashMap<String, HashSet<String>>, tag: &str, key: &str) {
    if let Some(keys) = by_tag.get_mut(tag) {
        keys.remove(key);
        if keys.is_empty() {
            by_tag.remove(tag);
        }
    }
}
