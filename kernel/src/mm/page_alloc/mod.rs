//! The buddy page allocator with migrate types.
