//! ds4-model: the DeepSeek V4 Flash forward pass (spec/model.md) over a
//! backend trait, with the CPU as its first backend.
//!
//! * [`load`] / [`gguf::open_validated`]: open a GGUF (validated by
//!   `ds4_gguf::validate`, config from `ds4_gguf::layout::ModelConfig`) and bind
//!   its tensors zero-copy from the mmap ([`GgufSource`]).
//! * [`Backend`]: opaque device buffers (`Buf`) and bound weights (`Mat`),
//!   whole-op calls over a batch of tokens (projections, RMSNorm, RoPE, mHC
//!   pre/post/head, compressor feed, masked attention with sink, indexer
//!   scores, routing, MoE); the host passes only positions and index lists.
//!   [`Cpu`] implements it with rayon.
//! * [`Model::forward`] runs a chunk of tokens at the session's position
//!   (layer-major, per-token state updates), so prefill in any chunking and
//!   token-by-token decoding give identical results; [`Session`] holds the raw
//!   window, compressor frontiers and compressed / indexer rows of spec §7.
//! * [`Numerics::Exact`] (f32, no quantisation simulation: the transformers
//!   oracle) or [`Numerics::Official`] (FP8 KV round trip, f16 KV storage,
//!   Hadamard + FP4 indexer, f64 RoPE angles), chosen per session.
//! * [`Model::mtp_forward`]: the MTP block (spec §6.2).
//! * [`dump_logits`]: every prefix's logits of a prompt to a float32 `.npy`.

#![allow(clippy::needless_range_loop, clippy::too_many_arguments)]

pub mod backend;
pub mod config;
pub mod cuda;
pub mod gguf;
pub mod model;
pub mod npy;
pub mod quantsim;
pub mod tiny;
pub mod weights;

pub use backend::{Backend, Cpu};
pub use config::{AttnKind, Config};
pub use cuda::Cuda;
pub use gguf::{dump_logits, load, GgufSource};
pub use model::{state_values_per_token, Model, Numerics, SeqStep, Session, Want, DEFAULT_CTX};
pub use weights::{MemSource, TensorData, TensorSource};
