//! Pushing revisions to open event streams: the [`Hub`] of per-user slots, and the
//! streams that watch them: SSE ([`sse`]), WebSocket ([`ws`]), the changelog for
//! replicas ([`changes`]), the connections that carry SSE streams without hyper
//! (`direct`) and write their frames from the publisher (`writer`), the single-use tickets that open them without headers
//! ([`tickets`]) and the per-user stream limit ([`open_streams`]).

pub mod changes;
pub(crate) mod direct;
mod hub;
pub mod open_streams;
pub mod sse;
pub mod subscription;
pub mod tickets;
mod writer;
pub mod ws;

pub use hub::{Frames, Hub, Slot, SlotState, ENDED_KEPT};
pub use open_streams::{OpenStreams, StreamGuard, Transport};
pub use tickets::Tickets;
pub use writer::PushCounters;
