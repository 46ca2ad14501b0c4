//! ds4-gguf: GGUF v3 container reader (read-only mmap, zero-copy tensor slices) and
//! streaming writer, plus the DeepSeek V4 Flash layout tools.
//! Spec: shared/spec/gguf-layout.md §6 (container), §3 (tensor types).

pub mod convert;
pub mod error;
pub mod layout;
pub mod reader;
pub mod synth;
pub mod validate;
pub mod value;
pub mod writer;

pub use ds4_quant::GgmlType;
pub use error::GgufError;
pub use reader::{GgufFile, TensorInfo};
pub use value::{Value, ValueType};
pub use writer::{write_file, GgufWriter, TensorStream};
