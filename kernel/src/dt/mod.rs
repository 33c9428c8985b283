//! Flattened device tree interpretation.
