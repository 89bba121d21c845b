//! Data access the host supplies to guests, traced once for every
//! language: [`sql`] (the databases a manifest grants a component).

pub mod sql;
