//! Pushing revisions to open event streams: the [`Hub`] of per-user slots.

mod hub;

pub use hub::{Hub, Slot, SlotState};
