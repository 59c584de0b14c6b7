//! Categories: a label on a torrent that names the sub-folder of the
//! download root its data goes to when it is added (a category's own
//! folder, else its name). Kept in `STATE_DIR/categories.json`; a
//! torrent's category is saved with it. Setting the category of a torrent
//! already added changes the label only: its data is not moved.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{find_entry, parse_hash, state, Service, ServiceError};

const FILE: &str = "categories.json";
/// Longer names are refused.
const MAX_NAME: usize = 255;
/// At most this many categories.
const MAX_CATEGORIES: usize = 1000;

/// A category: where its torrents' data goes ("" for the folder of its
/// name under the download root).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Category {
    #[serde(default)]
    pub save_path: String,
}

/// A category name as qBittorrent takes it: not empty, no leading or
/// trailing '/', no empty, "." or ".." part, no backslash or control
/// characters.
pub fn check_name(name: &str) -> Result<(), ServiceError> {
    let bad = |why: &str| {
        Err(ServiceError::Invalid(format!(
            "category {:?}: {why}",
            crate::out::escape(name)
        )))
    };
    if name.is_empty() {
        return bad("the name is empty");
    }
    if name.len() > MAX_NAME {
        return bad("the name is too long");
    }
    if name.chars().any(|c| c.is_control() || c == '\\') {
        return bad("the name has a backslash or control characters");
    }
    if name
        .split('/')
        .any(|p| p.is_empty() || p == "." || p == "..")
    {
        return bad("each part between '/' must be a name");
    }
    Ok(())
}

pub(super) fn load(state_dir: &Path) -> BTreeMap<String, Category> {
    let path = state_dir.join(FILE);
    match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
            tracing::warn!("{}: {e}; starting without categories", path.display());
            BTreeMap::new()
        }),
        Err(_) => BTreeMap::new(),
    }
}

impl Service {
    fn categories_lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Category>> {
        self.inner
            .categories
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Every category, with those only torrents name (from an older list).
    pub fn categories(&self) -> BTreeMap<String, Category> {
        let mut all = self.categories_lock().clone();
        for e in self.entries().iter() {
            if let Some(c) = &e.saved.category {
                all.entry(c.clone()).or_default();
            }
        }
        all
    }

    /// Creates (or with `edit`, changes) a category. Its folder must be
    /// inside the download root.
    pub fn create_category(
        &self,
        name: &str,
        save_path: &str,
        edit: bool,
    ) -> Result<(), ServiceError> {
        check_name(name)?;
        if !save_path.trim().is_empty() {
            super::resolve_dir(&self.inner.root, Some(save_path))?;
        }
        let snapshot = {
            let mut cats = self.categories_lock();
            match (cats.contains_key(name), edit) {
                (true, false) => {
                    return Err(ServiceError::Duplicate(format!("category {name}")));
                }
                (false, true) => {
                    return Err(ServiceError::NotFound(format!("category {name}")));
                }
                _ => {}
            }
            if cats.len() >= MAX_CATEGORIES && !edit {
                return Err(ServiceError::Invalid(format!(
                    "at most {MAX_CATEGORIES} categories"
                )));
            }
            cats.insert(
                name.to_string(),
                Category {
                    save_path: save_path.trim().to_string(),
                },
            );
            serde_json::to_vec_pretty(&*cats).map_err(|e| ServiceError::Failed(e.to_string()))?
        };
        state::write_atomic(&self.inner.cfg.state_dir.join(FILE), &snapshot)
            .map_err(|e| ServiceError::Failed(format!("saving the categories: {e}")))
    }

    /// Removes categories; their torrents lose the label.
    pub fn remove_categories(&self, names: &[&str]) -> Result<(), ServiceError> {
        let snapshot = {
            let mut cats = self.categories_lock();
            for n in names {
                cats.remove(*n);
            }
            serde_json::to_vec_pretty(&*cats).map_err(|e| ServiceError::Failed(e.to_string()))?
        };
        for e in self.entries().iter_mut() {
            if e.saved
                .category
                .as_deref()
                .is_some_and(|c| names.contains(&c))
            {
                e.saved.category = None;
            }
        }
        self.save();
        state::write_atomic(&self.inner.cfg.state_dir.join(FILE), &snapshot)
            .map_err(|e| ServiceError::Failed(format!("saving the categories: {e}")))
    }

    /// The folder a new torrent of `category` goes to (relative to the
    /// root, or as the category names it), unless the request names one.
    pub(super) fn category_dir(&self, category: &str) -> Result<String, ServiceError> {
        check_name(category)?;
        match self.categories_lock().get(category) {
            Some(c) if !c.save_path.is_empty() => Ok(c.save_path.clone()),
            _ => Ok(category.to_string()),
        }
    }

    /// Labels a torrent with a category (which must exist), or none ("").
    pub fn set_category(&self, hex_hash: &str, category: &str) -> Result<(), ServiceError> {
        let hash = parse_hash(hex_hash)?;
        if !category.is_empty() && !self.categories().contains_key(category) {
            return Err(ServiceError::NotFound(format!("category {category}")));
        }
        {
            let mut entries = self.entries();
            let e = find_entry(&mut entries, hash, hex_hash)?;
            e.saved.category = (!category.is_empty()).then(|| category.to_string());
        }
        self.save();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["tv", "tv/anime", "Films 2024", "ü"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "/tv", "tv/", "a//b", "..", "a/../b", "./a", "a\\b", "a\nb",
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
