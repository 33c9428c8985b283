//! Boot memory map.
