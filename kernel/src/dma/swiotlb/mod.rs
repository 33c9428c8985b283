//! SWIOTLB: bounce-buffer slot pools.
