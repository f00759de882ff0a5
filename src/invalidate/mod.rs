//! Invalidation from application code: the [`CacheHandle`] (by URL, key, prefix, tag and
//! namespace; warming) and the URL purges it and the `PURGE` method share. Every purge goes
//! through the layer's [`Invalidator`](crate::fence::Invalidator).

mod handle;
pub(crate) mod urls;

pub use handle::CacheHandle;
pub(crate) use handle::Warm;
