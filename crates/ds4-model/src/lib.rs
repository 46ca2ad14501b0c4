//! ds4-model: the DeepSeek V4 Flash forward pass (spec/model.md) over a
//! backend trait, with the CPU as its first backend.

#![allow(clippy::needless_range_loop, clippy::too_many_arguments)]

pub mod backend;
pub mod config;
pub mod gguf;
pub mod model;
pub mod npy;
pub mod quantsim;
pub mod tiny;
pub mod weights;

pub use backend::{Backend, Cpu};
pub use config::{AttnKind, Config};
pub use gguf::{dump_logits, load, GgufSource};
pub use model::{state_values_per_token, Model, Numerics, Session, Want};
pub use weights::{MemSource, TensorData, TensorSource};
