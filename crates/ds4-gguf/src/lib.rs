//! ds4-gguf
